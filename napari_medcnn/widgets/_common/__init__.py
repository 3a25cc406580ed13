"""What several dock widgets share (public names; imported by module).

* :mod:`.jobs`: worker plumbing without Qt widgets (``JobError``,
  ``guarded``, ``JobHandle``, ``WorkerPanel``) and the model-loading job.
* :mod:`.controls`: ``RunControls`` (action buttons, Cancel, progress bar,
  status line) and the scroll area of a tall panel.
* :mod:`.model_panel`: ``ModelPanelMixin`` and its child widgets
  (``ModelControls``, ``ScopeButtons``) for the Classify and Saliency panels.
* :mod:`.model_events`: hand a model from one docked widget to the others.
* :mod:`.channels`: ``ChannelList``, ticked image layers in channel order.
* :mod:`.layers`: layer helpers (full-resolution data, slice geometry,
  the marker of the plugin's result layers).
* :mod:`.labels`: the label store of an image layer (its sidecar).
* :mod:`.plots`: theme colours and the base matplotlib canvas.

Nothing is imported here, so importing one module does not pull in Qt.
"""
