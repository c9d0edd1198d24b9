"""peftgrid: which fine-tuning method for this model, task and budget — with evidence."""
__version__ = "0.1.0"
