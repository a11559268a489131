"""Training: `train()` in named steps (trainer), its callbacks, data-parallel processes
(distributed) and many trials (sweep). The only stage that writes a run folder's model."""
