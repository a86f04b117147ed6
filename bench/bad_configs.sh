#!/usr/bin/env bash
# Bad values against main_pretrain.py: each must stop with exit code 2, one line on stderr naming
# the key as written (at most ~200 characters), and nothing written to the current folder.
# Run from anywhere: bash bench/bad_configs.sh (in the project's venv).
set -u
main="$(cd "$(dirname "$0")/.." && pwd)/main_pretrain.py"
scratch=$(mktemp -d)
cd "$scratch" || exit 1
bad=0
check() {
    err=$(python "$main" --config-name "$@" 2>&1 >/dev/null); rc=$?
    lines=$(printf "%s\n" "$err" | grep -c .)
    echo "rc=$rc lines=$lines chars=${#err} | $err"
    [ "$rc" -eq 2 ] && [ "$lines" -eq 1 ] || bad=$((bad + 1))
}
R=mae-reg-uniformity.yaml
check $R optimizer.lr=-1
check $R optimizer.name=adamx
check $R optimizer.batch_size=0
check $R max_epochs=abc
check $R data.dataset=cifar11
check $R data.fraction=2
check $R data.num_workers=-3
check $R augmentations.0.rrc.crop_min_scale=1.5
check $R augmentations.0.horizontal_flip.prob=yes
check $R ++augmentations.0.colorjitter.prob=0.5
check $R backbone.name=vit_tinny
check $R ++backbone.kwargs.patch_size=7
check $R ++backbone.kwargs.num_heads=5
check $R method_kwargs.mask_ratio=1.0
check $R method_kwargs.decoder_num_heads=3
check mae.yaml method=mae-reg ++method_kwargs.regularizers.uniformity.weight=-1
check $R ++method_kwargs.regularizers.uniformty.weight=1
check mae.yaml method=mae-reg ++method_kwargs.regularizers.magma.layers=[0]
check $R "++method_kwargs.regularizers.tcr.scheduler={name:warmup,weight:1}"
check $R "++method_kwargs.regularizers.tcr.scheduler={name:triangle,start_weight:0,max_weight:1,end_weight:0,start_epoch:5,mid_epoch:2,end_epoch:9}"
check $R precision=17
check $R ++devices=0
check $R accelerator=gpu
check $R scheduler.name=cosine
check $R knn_eval.k=0
check $R ++checkpoint.frequency=0
check $R ++wandb.enabled=maybe
check $R ++reconstructions.num_images=100
check $R ++resume_from_checkpoint=/nope.ckpt
check $R ++method_kwargs.init_from=/nope
check $R ++diagnostics.max_samples=1
check $R ++method_kwargs.uniformity_weight=abc
written=$(find . -mindepth 1 | wc -l)
echo "cases not one line with exit 2: $bad; files written: $written"
rm -rf "$scratch"
[ "$bad" -eq 0 ] && [ "$written" -eq 0 ]
