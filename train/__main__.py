"""`python -m train prepare|grpo|sft ...`"""

from train.cli import main

raise SystemExit(main())
