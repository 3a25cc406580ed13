"""DICOM PS3.15 Annex E Table E.1-1 (edition 2024b), as data, and its options.

Every row of the Basic Application Level Confidentiality Profile table is
below, one ``Keyword=ACTION[:options]`` token per attribute, in tag order.
The keyword is the PS3.6 keyword (pydicom's dictionary turns it into the tag;
the tests check every row against pydicom's tag and name).  The rows were
transcribed from the standard's Table E.1-1 (via the machine-readable
``confidentiality_profile_attributes.json`` of innolitics/dicom-standard,
edition 2024b); the three repeating-group rows (Curve Data ``50xx,xxxx``,
Overlay Data ``60xx,3000``, Overlay Comments ``60xx,4000``) and "Private
Attributes" are handled in :func:`lookup` and the engine.

ACTION is the Basic Profile column: ``D`` dummy, ``Z`` zero length (or a
dummy), ``X`` remove, ``K`` keep, ``C`` clean, ``U`` replace UID
consistently, and the combined codes ``X/Z``, ``X/D``, ``X/Z/D``, ``Z/D``,
``X/Z/U*`` ("the first unless the next is needed for IOD conformance").

Option letters (lower case: the option's column says K, keep; upper case: it
says C, clean), one column of the table each:

=====  ==============================================================  ======
 u     Retain UIDs Option                                               113110
 v V   Retain Device Identity Option                                    113109
 i     Retain Institution Identity Option                               113112
 p P   Retain Patient Characteristics Option                            113108
 T     Retain Longitudinal Temporal Information Modified Dates Option   113107
 D     Clean Descriptors Option                                         113105
 S     Clean Structured Content Option (not offered: base action)       113104
 G     Clean Graphics Option (not offered: base action)                 113103
=====  ==============================================================  ======

The Full Dates column (113106) is K exactly where Modified Dates is C, so it
needs no letter; full dates are deliberately not offered.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from pydicom.datadict import tag_for_keyword

__all__ = ["EDITION", "TABLE", "Row", "lookup", "resolve"]

EDITION = "2024b"

_ROWS = """
AffectedSOPInstanceUID=X:u RequestedSOPInstanceUID=U:u
MediaStorageSOPInstanceUID=U:u ReferencedSOPInstanceUIDInFile=U:u
InstanceCreationDate=X/D:T InstanceCreationTime=X/Z/D:T InstanceCreatorUID=U:u
InstanceCoercionDateTime=X:T AcquisitionUID=U:u SOPInstanceUID=U:u PyramidUID=U:u
StudyDate=Z:T SeriesDate=X/D:T AcquisitionDate=X/Z:T ContentDate=Z/D:T
OverlayDate=X:T CurveDate=X:T AcquisitionDateTime=X/Z/D:T StudyTime=Z:T
SeriesTime=X/D:T AcquisitionTime=X/Z:T ContentTime=Z/D:T OverlayTime=X:T
CurveTime=X:T AccessionNumber=Z RetrieveAETitle=X:V StationAETitle=X:V
FailedSOPInstanceUIDList=U:u InstitutionName=X/Z/D:i InstitutionAddress=X:i
InstitutionCodeSequence=X/Z/D:i ReferringPhysicianName=Z ReferringPhysicianAddress=X
ReferringPhysicianTelephoneNumbers=X ReferringPhysicianIdentificationSequence=X
ConsultingPhysicianName=Z ConsultingPhysicianIdentificationSequence=X
ContextGroupVersion=D:T ContextGroupLocalVersion=D:T TimezoneOffsetFromUTC=X:T
NetworkID=X:V StationName=X/Z/D:v StudyDescription=X:D SeriesDescription=X:D
InstitutionalDepartmentName=X:i InstitutionalDepartmentTypeCodeSequence=X:i
PhysiciansOfRecord=X PhysiciansOfRecordIdentificationSequence=X
PerformingPhysicianName=X PerformingPhysicianIdentificationSequence=X
NameOfPhysiciansReadingStudy=X PhysiciansReadingStudyIdentificationSequence=X
OperatorsName=X/Z/D OperatorIdentificationSequence=X/D
AdmittingDiagnosesDescription=X:D AdmittingDiagnosesCodeSequence=X:D
PyramidDescription=X:D ReferencedStudySequence=X/Z:u
ReferencedPerformedProcedureStepSequence=X/Z/D:u ReferencedPatientSequence=X:u
ReferencedImageSequence=X/Z/U*:u ReferencedSOPInstanceUID=U:u TransactionUID=U:u
DerivationDescription=X:D SourceImageSequence=X/Z/U*:u IrradiationEventUID=U:u
IdentifyingComments=X:D PatientName=Z PatientID=Z/D IssuerOfPatientID=X
PatientBirthDate=Z PatientBirthTime=X PatientSex=Z:p
PatientInsurancePlanCodeSequence=X PatientPrimaryLanguageCodeSequence=X
PatientPrimaryLanguageModifierCodeSequence=X OtherPatientIDs=X OtherPatientNames=X
OtherPatientIDsSequence=X PatientBirthName=X PatientAge=X:p PatientSize=X:p
PatientWeight=X:p PatientAddress=X InsurancePlanIdentification=X
PatientMotherBirthName=X MilitaryRank=X BranchOfService=X MedicalRecordLocator=X
ReferencedPatientPhotoSequence=X MedicalAlerts=X:D Allergies=X:PD
CountryOfResidence=X RegionOfResidence=X PatientTelephoneNumbers=X
PatientTelecomInformation=X EthnicGroup=X:p Occupation=X:D SmokingStatus=X:p
AdditionalPatientHistory=X:D PregnancyStatus=X:p LastMenstrualDate=X:T
PatientReligiousPreference=X PatientSexNeutered=X/Z:p ResponsiblePerson=X
ResponsibleOrganization=X PatientComments=X:D ClinicalTrialSponsorName=D
ClinicalTrialProtocolID=D ClinicalTrialProtocolName=Z
IssuerOfClinicalTrialProtocolID=X OtherClinicalTrialProtocolIDsSequence=X
ClinicalTrialSiteID=Z:i ClinicalTrialSiteName=Z:i IssuerOfClinicalTrialSiteID=X
ClinicalTrialSubjectID=D IssuerOfClinicalTrialSubjectID=X
ClinicalTrialSubjectReadingID=D IssuerOfClinicalTrialSubjectReadingID=X
ClinicalTrialTimePointID=Z ClinicalTrialTimePointDescription=X:D
IssuerOfClinicalTrialTimePointID=X ClinicalTrialCoordinatingCenterName=Z:i
ClinicalTrialSeriesID=X ClinicalTrialSeriesDescription=X:D
IssuerOfClinicalTrialSeriesID=X ClinicalTrialProtocolEthicsCommitteeName=D:i
ClinicalTrialProtocolEthicsCommitteeApprovalNumber=X
EthicsCommitteeApprovalEffectivenessStartDate=X:T
EthicsCommitteeApprovalEffectivenessEndDate=X:T CalibrationTime=X:vT
CalibrationDate=X:vT MakerNote=X:D DeviceSettingDescription=X:D CameraOwnerName=X
LensSpecification=X:v LensMake=X:v LensModel=X:v LensSerialNumber=X:v GPSVersionID=X
GPSLatitudeRef=X GPSLatitude=X GPSLongitudeRef=X GPSLongitude=X GPSAltitudeRef=X
GPSAltitude=X GPSTimeStamp=X GPSSatellites=X GPSStatus=X GPSMeasureMode=X GPSDOP=X
GPSSpeedRef=X GPSSpeed=X GPSTrackRef=X GPSTrack=X GPSImgDirectionRef=X
GPSImgDirection=X GPSMapDatum=X GPSDestLatitudeRef=X GPSDestLatitude=X
GPSDestLongitudeRef=X GPSDestLongitude=X GPSDestBearingRef=X GPSDestBearing=X
GPSDestDistanceRef=X GPSDestDistance=X GPSProcessingMethod=X GPSAreaInformation=X
GPSDateStamp=X:T GPSDifferential=X ContrastBolusAgent=Z/D:D
InterventionDrugStopTime=X:T InterventionDrugStartTime=X:T
DeviceSerialNumber=X/Z/D:v DeviceUID=U:uv PlateID=X:v GeneratorID=X:v CassetteID=X:v
GantryID=X:v UniqueDeviceIdentifier=X:v UDISequence=X:v
ManufacturerDeviceClassUID=U:uv DateOfSecondaryCapture=X:T
TimeOfSecondaryCapture=X:T ProtocolName=X/D:D ContrastBolusStartTime=X:T
ContrastBolusStopTime=X:T RadiopharmaceuticalStartTime=X:T
RadiopharmaceuticalStopTime=X:T RadiopharmaceuticalStartDateTime=X:T
RadiopharmaceuticalStopDateTime=X:T AcquisitionFieldOfViewLabel=D:D
DateOfLastCalibration=X:vT TimeOfLastCalibration=X:vT DateTimeOfLastCalibration=X:vT
CalibrationDateTime=Z:vT DateOfManufacture=X:vT DateOfInstallation=X:vT
AcquisitionDeviceProcessingDescription=X/D:D TargetUID=U:u AcquisitionComments=X:D
TransducerIdentificationSequence=X:v DetectorID=X/D:v
DateOfLastDetectorCalibration=X/D:vT TimeOfLastDetectorCalibration=X/D:vT
FrameAcquisitionDateTime=D:T FrameReferenceDateTime=D:T
RespiratoryMotionCompensationTechniqueDescription=X:D XRaySourceID=D:v
SourceStartDateTime=D:T SourceEndDateTime=D:T XRayDetectorID=D:v
XRayDetectorLabel=X:v MultienergyAcquisitionDescription=X:D
DecompositionDescription=X:D AcquisitionProtocolDescription=X:D
StartAcquisitionDateTime=X/D:T EndAcquisitionDateTime=X/D:T FunctionalSyncPulse=D:T
DecayCorrectionDateTime=D:T ExclusionStartDateTime=D:T
InstructionPerformedDateTime=Z/D:T RequestedSeriesDescription=X:D
ContributionDateTime=X:T ContributionDescription=X:D StudyInstanceUID=U:u
SeriesInstanceUID=U:u StudyID=Z PyramidLabel=X:D FrameOfReferenceUID=U:u
SynchronizationFrameOfReferenceUID=U:u ModifyingDeviceID=X:v ModifiedImageDate=X:T
ModifiedImageTime=X:T ModifiedImageDescription=X ImageComments=X:D FrameComments=X:D
ConcatenationUID=U:u DimensionOrganizationUID=U:u PaletteColorLookupTableUID=U:u
LargePaletteColorLookupTableUID=U:u ImagePresentationComments=X StudyIDIssuer=X
StudyVerifiedDate=X:T StudyVerifiedTime=X:T StudyReadDate=X:T StudyReadTime=X:T
ScheduledStudyStartDate=X:T ScheduledStudyStartTime=X:T ScheduledStudyStopDate=X:T
ScheduledStudyStopTime=X:T ScheduledStudyLocation=X:v
ScheduledStudyLocationAETitle=X:V ReasonForStudy=X:D RequestingPhysician=X
RequestingService=X StudyArrivalDate=X:T StudyArrivalTime=X:T
StudyCompletionDate=X:T StudyCompletionTime=X:T RequestedProcedureDescription=X/Z:D
ReasonForVisit=X:D ReasonForVisitCodeSequence=X:D RequestedContrastAgent=X:D
StudyComments=X:D FlowIdentifierSequence=D FlowIdentifier=D SourceIdentifier=D
FrameOriginTimestamp=D:T ReferencedPatientAliasSequence=X AdmissionID=X
IssuerOfAdmissionID=X IssuerOfAdmissionIDSequence=X ScheduledAdmissionDate=X:T
ScheduledAdmissionTime=X:T ScheduledDischargeDate=X:T ScheduledDischargeTime=X:T
ScheduledPatientInstitutionResidence=X AdmittingDate=X:T AdmittingTime=X:T
DischargeDate=X:T DischargeTime=X:T DischargeDiagnosisDescription=X:D
SpecialNeeds=X:P ServiceEpisodeID=X IssuerOfServiceEpisodeID=X
ServiceEpisodeDescription=X:D IssuerOfServiceEpisodeIDSequence=X
CurrentPatientLocation=X PatientInstitutionResidence=X PatientState=X:PD
VisitComments=X:D MultiplexGroupUID=U:u ImpedanceMeasurementDateTime=D:T
WaveformFilterDescription=X:D FilterLookupTableDescription=X:D
ScheduledStationAETitle=X:V ScheduledProcedureStepStartDate=X:T
ScheduledProcedureStepStartTime=X:T ScheduledProcedureStepEndDate=X:T
ScheduledProcedureStepEndTime=X:T ScheduledPerformingPhysicianName=X
ScheduledProcedureStepDescription=X:D ScheduledProcedureStepID=X
ScheduledPerformingPhysicianIdentificationSequence=X ScheduledStationName=X:v
ScheduledProcedureStepLocation=X:v PreMedication=X:P PerformedStationAETitle=X:V
PerformedStationName=X:v PerformedLocation=X PerformedProcedureStepStartDate=X:T
PerformedProcedureStepStartTime=X:T PerformedProcedureStepEndDate=X:T
PerformedProcedureStepEndTime=X:T PerformedProcedureStepID=X
PerformedProcedureStepDescription=X:D RequestAttributesSequence=X:D
CommentsOnThePerformedProcedureStep=X:D CommentsOnRadiationDose=X:D
SpecimenAccessionNumber=X ContainerIdentifier=D
IssuerOfTheContainerIdentifierSequence=Z ContainerDescription=X:D
SpecimenIdentifier=D SpecimenUID=U:u AcquisitionContextSequence=X/Z:S
IssuerOfTheSpecimenIdentifierSequence=Z SpecimenShortDescription=X:D
SpecimenDetailedDescription=X:D SpecimenPreparationSequence=Z:S SlideIdentifier=X
RequestedProcedureID=X ReasonForTheRequestedProcedure=X:D
PatientTransportArrangements=X RequestedProcedureLocation=X
ReasonForRequestedProcedureCodeSequence=X:D NamesOfIntendedRecipientsOfResults=X
IntendedRecipientsOfResultsIdentificationSequence=X
PersonIdentificationCodeSequence=D PersonAddress=X PersonTelephoneNumbers=X
PersonTelecomInformation=X RequestedProcedureComments=X:D
ReasonForTheImagingServiceRequest=X:D IssueDateOfImagingServiceRequest=X:T
IssueTimeOfImagingServiceRequest=X:T OrderEnteredBy=X OrderEntererLocation=X
OrderCallbackPhoneNumber=X OrderCallbackTelecomInformation=X
PlacerOrderNumberImagingServiceRequest=Z FillerOrderNumberImagingServiceRequest=Z
ImagingServiceRequestComments=X:D
ConfidentialityConstraintOnPatientDataDescription=X
ScheduledProcedureStepStartDateTime=X:T ScheduledProcedureStepExpirationDateTime=X:T
ScheduledProcedureStepModificationDateTime=X:T ExpectedCompletionDateTime=X:T
ReferencedGeneralPurposeScheduledProcedureStepTransactionUID=U:u
ScheduledStationNameCodeSequence=X:v
ScheduledStationGeographicLocationCodeSequence=X:v
PerformedStationNameCodeSequence=X:v
PerformedStationGeographicLocationCodeSequence=X:v
ScheduledHumanPerformersSequence=X ActualHumanPerformersSequence=X
HumanPerformerOrganization=X HumanPerformerName=X
PerformedProcedureStepStartDateTime=X:T PerformedProcedureStepEndDateTime=X:T
ProcedureStepCancellationDateTime=X:T FindingsGroupRecordingDateTrial=X:T
FindingsGroupRecordingTimeTrial=X:T VerifyingOrganization=D VerificationDateTime=D:T
ObservationDateTime=X/D:T ObservationStartDateTime=X:T VerifyingObserverSequence=D
VerifyingObserverName=D AuthorObserverSequence=X ParticipantSequence=X
CustodialOrganizationSequence=X ParticipationDateTime=Z:T
VerifyingObserverIdentificationCodeSequence=Z
DateOfDocumentOrVerbalTransactionTrial=X:T
TimeOfDocumentCreationOrVerbalTransactionTrial=X:T DateTime=D:T Date=D:T Time=D:T
PersonName=D UID=U ReferencedDateTime=D:T ObservationUID=U:u
ReferencedObservationUIDTrial=U:u ObservationDateTrial=X:T ObservationTimeTrial=X:T
CurrentObserverTrial=X VerbalSourceTrial=X AddressTrial=X TelephoneNumberTrial=X
VerbalSourceIdentifierCodeSequenceTrial=X ObservationSubjectUIDTrial=U:u
ContentSequence=D:S TemplateVersion=X:T TemplateLocalVersion=X:T
TemplateExtensionOrganizationUID=U:u TemplateExtensionCreatorUID=U:u
HL7DocumentEffectiveTime=X:T EncapsulatedDocument=D ApprovalStatusDateTime=X:T
ProductExpirationDateTime=X:T SubstanceAdministrationDateTime=X:T
AssertionDateTime=D:T AssertionExpirationDateTime=X:T ContainerComponentID=X
DeviceDescription=X:v LongDeviceDescription=X:D TrackingUID=U:u
SourceFrameOfReferenceUID=U:u EffectiveDateTime=D:T InformationIssueDateTime=D:T
AnnotationGroupUID=D:u AnnotationGroupLabel=D:D AnnotationGroupDescription=X:D
GraphicAnnotationSequence=D:G PresentationCreationDate=X:T
PresentationCreationTime=X:T ContentCreatorName=Z/D
ContentCreatorIdentificationCodeSequence=X FiducialUID=U:u
PresentationDisplayCollectionUID=U:u PresentationSequenceCollectionUID=U:u
HangingProtocolCreationDateTime=D:T SelectorAEValue=D:V SelectorASValue=D:p
SelectorDAValue=D:T SelectorDTValue=D:T SelectorOBValue=D SelectorLOValue=D:D
SelectorLTValue=D:D SelectorPNValue=D SelectorTMValue=D:T SelectorSHValue=D:D
SelectorUNValue=D SelectorSTValue=D:D SelectorUTValue=D:D SelectorURValue=D
ReceivingAE=X:V RequestingAE=X:V StorageMediaFileSetUID=U:u IconImageSequence=X
TopicTitle=X TopicSubject=X TopicAuthor=X TopicKeywords=X
SOPAuthorizationDateTime=X:T DigitalSignatureUID=U DigitalSignatureDateTime=D:T
CertificateOfSigner=D CertifiedTimestamp=X:T ReferencedDigitalSignatureSequence=X
ReferencedSOPInstanceMACSequence=X MAC=X ModifiedAttributesSequence=X
NonconformingModifiedAttributesSequence=X NonconformingDataElementValue=X
OriginalAttributesSequence=X AttributeModificationDateTime=D:T ModifyingSystem=D:v
SourceOfPreviousValues=Z:i ReasonForTheAttributeModification=D:D
InstanceOriginStatus=X TextString=X CreationDate=X:T CreationTime=X:T Originator=X:V
DestinationAE=D:V LabelText=X/Z:D BarcodeValue=X/Z
PositionAcquisitionTemplateName=X:D PositionAcquisitionTemplateDescription=X:D
StructureSetLabel=D:D StructureSetName=X:D StructureSetDescription=X:D
StructureSetDate=Z:T StructureSetTime=Z:T ReferencedFrameOfReferenceUID=U:u
ROIName=Z:D ROIDescription=X:D ROIDateTime=X:T ROIObservationDateTime=X:T
ROIGenerationDescription=X:D ROICreatorSequence=X ROIInterpreterSequence=X
ROIObservationLabel=X:D ROIObservationDescription=X:D ROIInterpreter=Z
RelatedFrameOfReferenceUID=U:u TreatmentControlPointDate=D:T
TreatmentControlPointTime=D:T FirstTreatmentDate=X/D:T MostRecentTreatmentDate=X/D:T
SourceSerialNumber=X/Z:v SafePositionExitDate=D:T SafePositionExitTime=D:T
SafePositionReturnDate=D:T SafePositionReturnTime=D:T TreatmentDate=X/D:T
TreatmentTime=X/D:T RTPlanLabel=D:D RTPlanName=X:D RTPlanDescription=X:D
RTPlanDate=X/D:T RTPlanTime=X/D:T TreatmentSites=X:D PrescriptionDescription=X:D
DoseReferenceUID=U:u DoseReferenceDescription=X:D FractionGroupDescription=X:D
ReferencedDoseReferenceUID=U:u TreatmentMachineName=X/Z:v BeamDescription=X:D
BolusDescription=X:D FixationDeviceDescription=X:D ShieldingDeviceDescription=X:D
SetupTechniqueDescription=X:D SourceManufacturer=X:v SourceStrengthReferenceDate=D:T
SourceStrengthReferenceTime=D:T CompensatorDescription=X:D
TreatmentPositionGroupLabel=D:D TreatmentPositionGroupUID=U:u
RTAccessoryHolderSlotID=Z RTAccessoryDeviceSlotID=Z
RadiationDoseIdentificationLabel=D:D RadiationDoseInVivoMeasurementLabel=D:D
RTToleranceSetLabel=D:D PatientSetupUID=U:u EquipmentFrameOfReferenceDescription=X:D
RadiationGenerationModeLabel=D:D RadiationGenerationModeDescription=Z:D
TreatmentSessionUID=U:u TreatmentToleranceViolationDescription=D:D
TreatmentToleranceViolationDateTime=D:T RecordedRTControlPointDateTime=D:T
InterlockDateTime=D:T InterlockDescription=D:D OverrideDateTime=D:T
InterlockOriginDescription=D:D ReferencedTreatmentPositionGroupUID=U:u
PatientTreatmentPreparationProcedureParameterDescription=X:D
PatientTreatmentPreparationMethodDescription=X:D PatientSetupPhotoDescription=X:D
DisplacementReferenceLabel=X:D ReasonForOmissionDescription=X:D
BeamHoldTransitionDateTime=D:vT ReviewDate=Z:T ReviewTime=Z:T ReviewerName=X/Z
ConceptualVolumeUID=U:u ReferencedConceptualVolumeUID=U:u
ConceptualVolumeCombinationDescription=Z:D ConstituentConceptualVolumeUID=U:u
SourceConceptualVolumeUID=U:u ConceptualVolumeDescription=Z:D
DeviceAlternateIdentifier=Z DeviceLabel=D:v ReferencedFiducialsUID=U:u
UserContentLabel=D:D UserContentLongLabel=D:D EntityLabel=D:D EntityName=X:D
EntityDescription=X:D EntityLongLabel=D:D RTTreatmentPhaseUID=U:u
ManufacturerDeviceIdentifier=Z:v IntendedPhaseStartDate=X/D:T
IntendedPhaseEndDate=X/D:T RTPrescriptionLabel=D:D RTTreatmentApproachLabel=X/D:D
RTPhysicianIntentNarrative=Z:D ReasonForSuperseding=Z:D
PriorTreatmentDoseDescription=X:D DosimetricObjectiveUID=U:u
ReferencedDosimetricObjectiveUID=U:u TreatmentSite=X/D:D TreatmentTechniqueNotes=Z:D
PrescriptionNotes=Z:D FractionationNotes=Z:D PrescriptionNotesSequence=Z:D
IntendedFractionStartTime=X:T Arbitrary=X TextComments=X ResultsID=X
ResultsIDIssuer=X InterpretationRecordedDate=X:T InterpretationRecordedTime=X:T
InterpretationRecorder=X InterpretationTranscriptionDate=X:T
InterpretationTranscriptionTime=X:T InterpretationTranscriber=X
InterpretationText=X:D InterpretationAuthor=X InterpretationApproverSequence=X
InterpretationApprovalDate=X:T InterpretationApprovalTime=X:T
PhysicianApprovingInterpretation=X InterpretationDiagnosisDescription=X:D
ResultsDistributionListSequence=X DistributionName=X DistributionAddress=X
InterpretationID=X InterpretationIDIssuer=X Impressions=X:D ResultsComments=X:D
DigitalSignaturesSequence=X DataSetTrailingPadding=X
"""


@dataclass(frozen=True)
class Row:
    """One row of Table E.1-1: ``action`` is the Basic Profile code and
    ``options`` the option letters (see the module docstring)."""

    tag: int
    keyword: str
    action: str
    options: str = ""


def _parse(text: str) -> dict[int, Row]:
    rows: dict[int, Row] = {}
    for token in text.split():
        keyword, _, rest = token.partition("=")
        action, _, options = rest.partition(":")
        tag = tag_for_keyword(keyword)
        if tag is None:
            raise ValueError(f"Table E.1-1: unknown keyword {keyword!r}")
        rows[int(tag)] = Row(int(tag), keyword, action, options)
    return rows


#: tag -> :class:`Row`, every non-repeating row of Table E.1-1.
TABLE: dict[int, Row] = _parse(_ROWS)

_CURVE = Row(0x50000000, "CurveData", "X", "G")
_OVERLAY = {
    0x3000: Row(0x60003000, "OverlayData", "X", "G"),
    0x4000: Row(0x60004000, "OverlayComments", "X", "G"),
}


def lookup(tag: int) -> Row | None:
    """The Table E.1-1 row for ``tag`` (repeating groups included), or None
    for attributes the table does not list (kept) and private ones."""
    row = TABLE.get(tag)
    if row is not None:
        return row
    group, elem = tag >> 16, tag & 0xFFFF
    if group % 2 == 0 and group & 0xFF00 == 0x5000:
        return _CURVE
    if group % 2 == 0 and group & 0xFF00 == 0x6000:
        return _OVERLAY.get(elem)
    return None


#: Attributes that are Type 1 in the enhanced (functional-group) image IODs,
#: where a combined code must give a dummy (D) rather than remove or empty.
_TYPE1_ENHANCED = frozenset(
    {"AcquisitionDateTime", "ContentDate", "ContentTime", "DeviceSerialNumber"}
)
#: Combined code -> the choice made without the IOD's module tables: empty
#: where Type 2 is possible (keeps the attribute, carries nothing), removal
#: for X/D (Type 3 in the image IODs), remapped UIDs inside reference
#: sequences (keeps references between images intact).
_COMBINED = {"X/Z": "Z", "X/D": "X", "X/Z/D": "Z", "Z/D": "Z", "X/Z/U*": "U*"}


@cache
def resolve(row: Row, letters: frozenset[str], enhanced: bool = False) -> str:
    """The single action (``X Z D U U* K C``) for ``row`` under the options
    whose letters are ``letters``.

    An option column that applies wins over the Basic Profile.  Where two
    apply, the shifted dates win for temporal attributes (a real date next
    to shifted ones would undo the shift), otherwise K wins over C.  Patient
    ID always gets a dummy (a keyed pseudonym), so that studies of one
    patient stay together.
    """
    hits = [ch for ch in row.options if ch in letters]
    if "T" in hits:
        return "C"
    if any(ch.islower() for ch in hits):
        return "K"
    if hits:
        return "C"
    if row.keyword == "PatientID":
        return "D"
    action = row.action
    if "/" in action:
        if enhanced and row.keyword in _TYPE1_ENHANCED:
            return "D"
        return _COMBINED[action]
    return action
