"""io/dicom."""
