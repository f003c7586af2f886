"""One module per DVC stage, named like the stage: the function its `stages/` script calls."""
