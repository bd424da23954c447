"""Benchmarks: synthdx's training and prediction against the plain path a user would write
(transformers `Trainer` + peft in fp32; `model.generate` one record at a time), measured side by
side in one run and reported as ratios, with model-FLOPs utilisation. `synthdx bench train|predict`."""
