"""Export: ONNX graphs of a checkpoint (the front-end and the model, `onnx`) and the torch-free tagger copied beside
them (`onnx_tagger`, which reads files with `data.audio_files`)."""
