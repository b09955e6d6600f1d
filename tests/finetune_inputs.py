"""What the pretrain.finetune tests share: the MRPC paraphrase corpus and the sequence length."""

from .conftest import DATA

MRPC = {split: DATA / "finetune" / f"msr_paraphrase_{split}.txt" for split in ("train", "test")}
SEQ = 128
