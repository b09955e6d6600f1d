"""The training machinery pretrain.train, pretrain.finetune and pretrain.ablate share: DeepSpeed
(`engine`, the one module that touches it), checkpoints, metrics.csv and the step loop (`loop`)."""
