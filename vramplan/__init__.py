"""vramplan: will this LoRA / QLoRA fine-tuning job fit on that GPU, and how fast will it run?"""

__version__ = "0.1.0"
