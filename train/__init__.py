"""GRPO fine-tuning of the STVG-R1 grounder on video (`STVG-R1.md` §7). Imports ``stvgr1_edge``, never the reverse.

- :mod:`stvgr1_edge_train.prepare` — annotations + videos → cache (tracking, GT-ID assignment, markers, processor
  tensors);
- :mod:`stvgr1_edge_train.rewards` — tIoU, ID match, format (and an optional boundary penalty) as TRL reward functions;
- :mod:`stvgr1_edge_train.grpo` — ``VideoGRPOTrainer``: TRL's GRPO with the video in every forward pass;
- :mod:`stvgr1_edge_train.sft` — optional teacher-forced warm-start on the same cache;
- :mod:`stvgr1_edge_train.cli` — ``stvg-edge train prepare|grpo|sft`` and ``python -m stvgr1_edge_train``.
"""
