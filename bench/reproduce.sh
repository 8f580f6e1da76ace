#!/usr/bin/env bash
# Every run behind README's "Results", in one place, so a session with a GPU (or a long CPU slot) can
# start it and walk away. Each step resumes its run directory and merges its record into
# bench/results/*.json, so the script can be killed and started again at any point.
#
#   bash bench/reproduce.sh                 # all groups, in this order
#   bash bench/reproduce.sh backbones pad   # only some groups: backbones pad study palr speed
#
# Training uses the GPU when torch sees one (accelerator=auto). Records name the device.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
export PADREC_DATA=${PADREC_DATA:-$(cd .. && pwd)/shared/datasets}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
RUNS=bench/.work/runs
groups=("$@")
[ ${#groups[@]} -eq 0 ] && groups=(backbones pad study palr speed)

step() { echo "== $(date +%H:%M:%S) $*" >&2; "$PY" "$@"; }

for g in "${groups[@]}"; do
  case $g in
    backbones)  # issue 3: reproduction table (full ranking, leave-one-out)
      for ds in ml-1m amazon-beauty; do
        for m in sasrec gru4rec bert4rec caser bpr pop; do
          step bench/bench_accuracy.py --dataset "$ds" --model "$m"
        done
        # NCF scores every (user, item) pair: validate every 5th epoch on 5,000 seeded users (Beauty's record
        # needed 8 validations of patience: its best came 45 epochs after a 20-epoch flat stretch)
        patience=4; [ "$ds" = amazon-beauty ] && patience=8
        step bench/bench_accuracy.py --dataset "$ds" --model ncf val_every=5 val_users=5000 patience=$patience max_epochs=300
      done ;;
    pad)  # issue 5: PAD vs backbone, 3 seeds, SASRec and GRU4Rec backbones
      for ds in ml-1m amazon-beauty; do
        step bench/bench_pad.py --dataset "$ds" --backbone sasrec --seeds 0 1 2 --pretrained "$RUNS/$ds/sasrec" \
          length_buckets=true patience=5
        step bench/bench_pad.py --dataset "$ds" --backbone gru4rec --seeds 0 1 2 --pretrained "$RUNS/$ds/gru4rec" \
          length_buckets=true patience=5
        # padrec's variants: the third expert is training-free title similarity to the last item, with the
        # pre-trained experts frozen in stage 3 (simfrozen) or fine-tuned (sim)
        for bb in sasrec gru4rec; do
          step bench/bench_pad.py --dataset "$ds" --backbone $bb --variant simfrozen --seeds 0 1 2 \
            --pretrained "$RUNS/$ds/$bb" "experts=[collab,aligned,similarity]" "freeze=[collab,aligned]" \
            length_buckets=true patience=5
          step bench/bench_pad.py --dataset "$ds" --backbone $bb --variant sim --seeds 0 1 2 \
            --pretrained "$RUNS/$ds/$bb" "experts=[collab,aligned,similarity]" length_buckets=true patience=5
        done
        # ablation: every expert also trained on its own cross-entropy
        step bench/bench_pad.py --dataset "$ds" --backbone sasrec --variant aux --seeds 0 1 2 \
          --pretrained "$RUNS/$ds/sasrec" expert_loss=1.0 length_buckets=true patience=5
        # ablations from config (one shared backbone): text expert pre-trained alone, mpnet text vectors
        # (`make mpnet` first), fixed gates, two experts, no alignment, InfoNCE instead of MK-MMD
        for v in "textpre text_init=pretrain" "fixedgates learn_gates=false" "2experts experts=[collab,text]" \
                 "nolam lam=0" "infonce alignment=infonce"; do
          read -r name over <<< "$v"
          step bench/bench_pad.py --dataset "$ds" --backbone sasrec --variant "$name" --seeds 0 1 2 \
            --pretrained "$RUNS/$ds/sasrec" "$over" length_buckets=true patience=5
        done
        step bench/bench_pad.py --dataset "$ds" --backbone sasrec --variant mpnet --encoder mpnet --seeds 0 1 2 \
          --pretrained "$RUNS/$ds/sasrec" text_init=pretrain length_buckets=true patience=5
      done ;;
    study)  # issue 20: the PAD default and the fidelity study, 3 seeds on seed 0's backbone (--pretrained)
      STUDY=bench/.work/pad
      for ds in ml-1m amazon-beauty; do
        extra=(backbone.max_len=50 patience=5); [ "$ds" = amazon-beauty ] && extra=(length_buckets=true patience=5 max_epochs=60)
        # seed 0 trains the backbone that seeds 1-2 reuse
        step bench/bench_pad.py --dataset "$ds" --seeds 0 --presets paper simfrozen simcal -- "${extra[@]}"
        # (seed 0's finished stages are reused; the 3-seed records replace the 1-seed ones)
        step bench/bench_pad.py --dataset "$ds" --seeds 0 1 2 --presets paper simfrozen simcal \
          --pretrained "$STUDY/$ds/sasrec-seed0/pretrain" -- "${extra[@]}"
        step bench/bench_pad.py --dataset "$ds" --seeds 0 1 2 --presets paper-bins11 paper-bce \
          --pretrained "$STUDY/$ds/sasrec-seed0/pretrain" -- "${extra[@]}"   # paper-bce trains its own backbone
        official=(); for o in "${extra[@]}"; do [[ $o == backbone.max_len=* ]] || official+=("$o"); done
        step bench/bench_pad.py --dataset "$ds" --seeds 0 1 2 --presets paper-official -- "${official[@]}"  # its max_len 20
        for enc in smollm2 gemma3-270m; do
          step bench/bench_pad.py --dataset "$ds" --seeds 0 1 2 --variant "$enc" --encoder "$enc" \
            --pretrained "$STUDY/$ds/sasrec-seed0/pretrain" -- "${extra[@]}"
        done
        for lam in 0.05 1.0; do
          step bench/bench_pad.py --dataset "$ds" --seeds 0 1 2 --variant "lam$lam" \
            --pretrained "$STUDY/$ds/sasrec-seed0/pretrain" -- lam=$lam "${extra[@]}"
        done
        # paired bootstrap intervals of seed 0's changes over its own backbone (test users)
        runs=(); for r in sasrec sasrec-paper-bins11 sasrec-paper-bce sasrec-paper-official sasrec-smollm2 \
                          sasrec-gemma3-270m sasrec-lam0.05 sasrec-lam1.0; do runs+=("$STUDY/$ds/$r-seed0"); done
        step bench/bench_pad_ci.py --dataset "$ds" --run-dir "${runs[@]}"
        # new items: a seeded 5% of the items held out of training, added from text (own backbone per seed)
        step bench/bench_pad.py --dataset "$ds" --seeds 0 1 2 --new-items 0.05 --presets paper simfrozen simcal \
          -- "${extra[@]}"
      done
      step bench/bench_pad.py --choose-default ;;
    palr)  # issue 19: v2 on 1,000 seeded test users, with its fusion and upper-bound rows, next to the retriever
      STUDY=bench/.work/pad
      for ds in ml-1m amazon-beauty; do
        step bench/bench_palr_finetune.py --dataset "$ds" --retriever "$STUDY/$ds/sasrec-seed0/pretrain" \
          --users 1000 --gen-users 200 --steps 300 --select-every 100 --select-users 100 \
          --train-negatives retriever --train-order retriever --user-fraction 0.5 --tag ordered \
          --run-dir "bench/.work/palr-ft/$ds-ordered"
      done ;;
    speed)  # issue 3: SASRec speed and memory next to RecBole (installs RecBole in its own venv)
      step bench/bench_recbole.py --dataset ml-100k --epochs 200 --patience 20 --recbole-epochs 3
      step bench/bench_recbole.py --dataset amazon-beauty --epochs 20 --recbole-epochs 4 --padrec-batch-size 44 ;;
    *) echo "unknown group $g (backbones pad study palr speed)" >&2; exit 2 ;;
  esac
done
