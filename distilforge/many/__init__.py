"""`distilforge build-many`: many checkpoints' builds fanned out as Ray tasks, one per (checkpoint, target),
merged per checkpoint into the output directory one sequential `build` would have written."""
