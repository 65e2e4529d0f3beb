"""Muppet-style pre-finetuning (Aghajanyan et al. 2021) and its task-scaling study."""

__version__ = "0.1.0"
