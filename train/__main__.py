"""`python -m stvgr1_edge_train prepare|grpo|sft ...`"""

from stvgr1_edge_train.cli import main

raise SystemExit(main())
