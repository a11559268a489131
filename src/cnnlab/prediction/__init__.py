"""Prediction: a picture's way to the model (preprocess), the backend-neutral Predictor and its
Keras and ONNX Runtime siblings, and `load_predictor` / `predict` (inference)."""
