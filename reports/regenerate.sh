#!/usr/bin/env bash
# Regenerates the committed example report from the embedded model, offline, on a CPU:
#   bash reports/regenerate.sh            (about 10 minutes on 2 idle cores)
# Runs are resumable (qeval run skips finished ones); delete reports/runs to start over.
set -euo pipefail
cd "$(dirname "$0")"
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
qeval run --model qeval-tiny \
          --quantizers none,bnb-int8,bnb-nf4,rtn:bits=3,rtn:bits=2 \
          --tasks qeval_demo,qeval_sqnr,qeval_temperature \
          --device cpu --limit 4 --metadata '{"max_new_tokens": 32}' --output runs
qeval report runs --format markdown --out demo_report.md --plot plots
