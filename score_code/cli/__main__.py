"""`python -m score_code.cli ...`: the entry point for launchers (`torchrun`, `accelerate launch -m`)."""
from score_code.cli import main

raise SystemExit(main())
