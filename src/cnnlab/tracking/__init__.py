"""What watches a run from outside cnnlab, written from its run folder, never instead of it.

`events`: TensorBoard's event files in `RUN/logs/` (the training callback is
`cnnlab.training.callbacks.TensorBoardLog`; evaluation adds the test split's figures).
`mlflow_runs`: the run mirrored to an MLflow tracking server or database (`--log mlflow`).
Neither is imported by `import cnnlab`; TensorFlow's `tf.summary` and MLflow load on first use.
"""
