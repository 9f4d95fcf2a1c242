"""Training: ``trainer`` (the loop, ``speakerid train``), ``model`` (encoder + classification head,
optimizer), ``schedule`` (learning rate and margin schedules), ``log`` (history and curves),
``dev_eval`` (the dev EER during training), ``warm_start`` (``train --init EXP``)."""
