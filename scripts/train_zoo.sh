#!/usr/bin/env bash
# Train the default prompt library (data/zoo) with the project's own `tpv train` commands.
# Resumable: `tpv train` skips every (backbone, task, origin) the store already holds, so this can be
# stopped and re-run in pieces. Each prompt's metadata records the command and budget that made it.
#
#   scripts/train_zoo.sh starter   # MiniLM, the paper's six source tasks x 3 origins (the app's first launch)
#   scripts/train_zoo.sh minilm    # MiniLM, every bundled task x 3 origins
#   scripts/train_zoo.sh smollm2   # SmolLM2-135M, the six source tasks x 3 origins
#   scripts/train_zoo.sh all       # all of the above
set -euo pipefail
cd "$(dirname "$0")/.."
TPV=${TPV:-.venv/bin/tpv}
STORE=${STORE:-data/zoo}
ORIGINS=${ORIGINS:-0-2}
export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1} HF_DATASETS_OFFLINE=${HF_DATASETS_OFFLINE:-1}

SOURCES="mnli qnli dbpedia_14 trec sst2 yelp_polarity"
TARGETS="scitail snli ag_news yahoo_answers_topics imdb sst5"
OTHERS="rte qqp mrpc cola stsb cb sentences_yelp sentences_imdb sentences_amazon"

stage=${1:-starter}
train() { "$TPV" train --store "$STORE" --origin $ORIGINS "$@"; }

case "$stage" in
  starter) train --backbone minilm-l6 --task $SOURCES ;;
  minilm)  train --backbone minilm-l6 --task $SOURCES $TARGETS $OTHERS ;;
  smollm2) train --backbone smollm2-135m --task $SOURCES ;;
  all)     "$0" minilm && "$0" smollm2 ;;
  *) echo "usage: $0 starter|minilm|smollm2|all" >&2; exit 2 ;;
esac
