#!/usr/bin/env bash
# Mutation testing as a habit (outside CI): mutmut, bounded, over the numerical core.
#
#   bench/mutation.sh [GROUP ...]   groups: losses regularizers config schedulers optim knn runfolder (default: all)
#
# Each group names the modules mutated and the fast tests that guard them (a mutant runs only the
# tests that reach the mutated function). Every group runs in its own scratch copy of the working
# tree (MUTATION_WORKDIR, default /tmp/solo-ext-mutation/GROUP), so the checkout gets no mutants/
# folder, for at most MUTATION_TIMEOUT seconds (default 600) with MUTATION_CHILDREN workers
# (default 2). The run folder (atomic writer, checkpoint choice, lock, identity) is group runfolder.
#
# MUTATION_RESUME=1 keeps a group's scratch copy and lets mutmut go on with the mutants a bounded
# run left unchecked (it reruns only those); without it every run starts from a fresh copy.
#
# Output: per group, every mutant with its status in WORKDIR/GROUP/results.txt, and one summary
# line per group (killed, survived, other: no tests / timeout / not checked in the time given).
# Each surviving mutant is either killed by a new test or listed in bench/MUTATION.md as
# equivalent, with the reason.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
root=${MUTATION_WORKDIR:-${TMPDIR:-/tmp}/solo-ext-mutation}
budget=${MUTATION_TIMEOUT:-600}
children=${MUTATION_CHILDREN:-2}

declare -A modules tests
modules[losses]='"solo_ext/losses/*.py"'
tests[losses]='"tests/losses", "tests/regularizers"'
modules[regularizers]='"solo_ext/regularizers/*.py"'
# the fits of test_mae_reg cost seconds per mutant: its config and single-step tests only
tests[regularizers]='"tests/regularizers", "tests/config/test_pretrain_args.py", "tests/methods/test_mae_reg.py::test_bad_regularizer_config_is_one_line", "tests/methods/test_mae_reg.py::test_loss_is_reconstruction_plus_weighted_regularizers", "tests/methods/test_mae_reg.py::test_zero_weight_regularizer_is_not_computed", "tests/methods/test_mae_reg.py::test_weights_follow_the_schedule_by_epoch"'
modules[config]='"solo_ext/config/pretrain.py"'
# test_lightning: the derived precision and world size; test_knn_bank: the kNN protocol's bank line
tests[config]='"tests/config/test_pretrain_args.py", "tests/config/test_lightning.py", "tests/methods/test_knn_bank.py", "tests/optim/test_lr_schedule.py::test_warmup_start_lr_and_min_lr_are_scaled_like_lr", "tests/methods/test_mae_reg.py::test_lr_is_scaled_by_global_batch"'
modules[schedulers]='"solo_ext/schedulers/*.py"'
tests[schedulers]='"tests/schedulers", "tests/methods/test_mae_reg.py::test_weights_follow_the_schedule_by_epoch"'
# the optimizer factory: groups, the lr schedule (its Lightning wiring is checked by real fits)
modules[optim]='"solo_ext/optim/factory.py"'
tests[optim]='"tests/optim", "tests/schedulers/test_schedule_properties.py", "tests/methods/test_linear_model.py::test_layer_decay_ratios_hold_through_warmup_and_decay"'
modules[knn]='"solo_ext/eval/knn.py"'
tests[knn]='"tests/eval/test_knn.py"'
# the run folder: atomic writes, the newest readable checkpoint, the lock, job identity
modules[runfolder]='"solo_ext/utils/runfolder.py"'
tests[runfolder]='"tests/utils/test_runfolder.py"'

groups=("$@")
[ ${#groups[@]} -gt 0 ] || groups=(losses regularizers config schedulers optim knn runfolder)
for group in "${groups[@]}"; do
    if [ -z "${modules[$group]:-}" ]; then
        echo "unknown group '$group'; groups: ${!modules[*]}" >&2
        exit 2
    fi
done

export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1  # one core per worker
unset PYTHONPATH  # mutmut's own sys.path puts the mutated copy first
summary=()
for group in "${groups[@]}"; do
    work="$root/$group"
    if [ "${MUTATION_RESUME:-0}" != 1 ] || [ ! -d "$work/mutants" ]; then
        rm -rf "$work"
        mkdir -p "$work"
        # the working tree as it is (tracked and new files), without ignored ones
        (cd "$repo" && git ls-files -co --exclude-standard -z | tar --null -T - -cf -) | tar -xf - -C "$work"
        printf 'only_mutate = [%s]\npytest_add_cli_args_test_selection = [%s]\n' \
            "${modules[$group]}" "${tests[$group]}" >>"$work/pyproject.toml"
    fi
    echo "== $group: $(date -u +%H:%M:%S), at most ${budget}s" >&2
    (cd "$work" && timeout --signal=INT --kill-after=30 "$budget" mutmut run --max-children "$children") \
        >"$work/run.log" 2>&1 || echo "   mutmut stopped (exit $?): see $work/run.log" >&2
    (cd "$work" && mutmut results --all true) >"$work/results.txt" 2>/dev/null || true
    killed=$(grep -c ': killed$' "$work/results.txt" || true)
    survived=$(grep -c ': survived$' "$work/results.txt" || true)
    total=$(grep -c ': ' "$work/results.txt" || true)
    summary+=("$group: $killed killed, $survived survived, $((total - killed - survived)) other (of $total)")
    grep ': survived$' "$work/results.txt" | sed 's/^ */   survived: /' >&2 || true
done
printf '%s\n' "${summary[@]}"
