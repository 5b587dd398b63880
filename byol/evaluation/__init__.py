"""Evaluation of a frozen or fine-tuned encoder (arXiv:2006.07733, Section 4): features, the
weighted kNN, linear probes and fine-tuning (probes.py), and the protocols of ``byol eval`` that
run them on a run folder and record results.json (protocols.py, results.py). Nothing here
imports training: the kNN monitor of training uses this layer, not the other way round."""
