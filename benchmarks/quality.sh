#!/usr/bin/env bash
# The quality benchmark of one data set: LM -> MaskMLE -> MaskGAN, then the evaluation suite comparing
# LM (left context only), MaskMLE and MaskGAN in-fills across temperatures: masked perplexity,
# perplexity under an independent evaluation LM, unique n-grams, reverse-LM perplexity, BLEU/Self-BLEU,
# quality-diversity plots and, on synthetic data, the oracle NLL, and the verdict: each model's
# eval-LM perplexity against MaskMLE's at matched reverse-LM perplexity, with a held-out discriminator
# (two-sample test, 100 steps per model and temperature) at every point. Seven temperatures, so that
# MaskMLE's curve is fine enough to interpolate along; one training and one evaluation seed, so no
# interval: benchmarks/verdict_experiment.py is the experiment with seeds. Budgets finish in under an
# hour per data set on 2 CPU cores.
#
#   bash benchmarks/quality.sh ptb|imdb|synthetic [dotted overrides for training...]
#
# Publishes metrics.md, samples.md, results.json and the plots in docs/results/<data set>/; the run
# itself (checkpoints, MLflow database) stays in runs/quality-<data set>/.
set -euo pipefail
cd "$(dirname "$0")/.."
dataset=${1:?usage: bash benchmarks/quality.sh ptb|imdb|synthetic [overrides...]}
shift
MASKGAN=${MASKGAN:-.venv/bin/maskgan}
run_dir=runs/quality-$dataset
case $dataset in
  ptb) preset=ptb budget=(pretrain.lm_steps=1500 pretrain.mle_steps=1500 gan.iterations=100) ;;
  imdb) preset=imdb budget=(pretrain.lm_steps=1000 pretrain.mle_steps=1000 gan.iterations=60) ;;
  synthetic) preset=synthetic-gan budget=() ;;
  *) echo "unknown data set '$dataset': use ptb, imdb or synthetic" >&2; exit 2 ;;
esac

started=$(date +%s)
$MASKGAN train --preset "$preset" "run_dir=$run_dir" "${budget[@]}" "$@"
trained=$(date +%s)
$MASKGAN evaluate "$run_dir"/checkpoints/{lm,mle,maskgan}.pt pretrain.lm_steps=600 --out "$run_dir/eval" \
  --temperatures 0.5,0.7,0.85,1.0,1.15,1.3,1.5 --samples 400 --bleu-references 300 --reverse-lm-steps 100 \
  --two-sample-steps 100 --seeds 0 --table-rows 6
finished=$(date +%s)

mkdir -p "docs/results/$dataset"
cp "$run_dir"/eval/{metrics.md,samples.md,results.json,quality_diversity_lm.png,quality_diversity_bleu.png} "docs/results/$dataset/"
[ -f "$run_dir/eval/quality_diversity_oracle.png" ] && cp "$run_dir/eval/quality_diversity_oracle.png" "docs/results/$dataset/"
echo "[quality] $dataset: training $(( (trained - started) / 60 )) min, evaluation $(( (finished - trained) / 60 )) min;" \
  "results in docs/results/$dataset/" | tee "docs/results/$dataset/timing.txt"
