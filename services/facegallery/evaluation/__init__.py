"""Evaluation with the field's protocols: 10-fold verification accuracy, ROC, TAR@FAR."""
