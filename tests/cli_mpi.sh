#!/usr/bin/env bash
# `mpirun -n N fedtune sim`: rank 0 the coordinator on TCP, the other ranks the sites over
# TLS with certificates from rank 0. With 2 and 3 ranks the final model's SHA-256 is the
# single-process (plaintext inproc) run's, also with dropouts, stragglers and an attack;
# the outputs are rank 0's, with one line per rank; one clear line when --mpi has a
# single rank, and a failure (missing data, an unreachable --mpi-host) names its rank and
# fails the whole launch.
# Skipped (a failure under CI=true) without mpirun or a fedtune built with MPI.
# Usage: cli_mpi.sh <path to fedtune> <source dir>
set -u
FEDTUNE=$1
SRC=$2
# shellcheck source=tests/lib.sh
. "$SRC/tests/lib.sh"

command -v mpirun >/dev/null || skip "mpirun not found (Debian package openmpi-bin)"
if "$FEDTUNE" sim --mpi --data /nonexistent 2>&1 | grep -q "built without MPI"; then
  skip "fedtune was built without MPI (Debian package libopenmpi-dev)"
fi
# Root (CI) needs OpenMPI's consent; a 2-core machine needs --oversubscribe for 3 ranks.
MPIRUN=(mpirun --oversubscribe --allow-run-as-root)
# Containers often forbid the cross-memory attach OpenMPI's shared-memory transport uses
# for large messages; plain copies work everywhere (the test's messages are small anyway).
export OMPI_MCA_btl_vader_single_copy_mechanism=none
# OpenMPI's own allocations at exit are not ours to fix (ASan builds): see the file. Its
# plugins are unloaded before LeakSanitizer looks, so only the slow unwinder reaches the
# libmpi frames the suppressions name.
export LSAN_OPTIONS="${LSAN_OPTIONS:+$LSAN_OPTIONS:}suppressions=$SRC/tests/data/lsan-mpi.supp"
export ASAN_OPTIONS="$ASAN_OPTIONS:fast_unwind_on_malloc=0"

blobs 600 0 >"$tmp/train.csv"
blobs 150 1000 >"$tmp/test.csv"
ARCH='{"input":[4],"layers":[{"type":"linear","out":8},{"type":"relu"},{"type":"linear","out":3}]}'
SIM=("$FEDTUNE" sim --data "$tmp/train.csv" --test-data "$tmp/test.csv" --arch "$ARCH"
  --clients 12 --partition iid --fraction 0.5 --rounds 4 --epochs 2 --batch 10 --lr 0.1
  --workers 2 --seed 3)

# The single-process run, then 3 ranks (sites 0 2 4 .. on rank 1, 1 3 5 .. on rank 2).
run_status "one process" 0 "$tmp/one.out" -- "${SIM[@]}" --csv "$tmp/one.csv"
h1=$(hash_of "$tmp/one.out")
ok "the single-process run prints a hash" test -n "$h1"
run_status "mpirun -n 3" 0 "$tmp/n3.out" -- "${MPIRUN[@]}" -n 3 "${SIM[@]}" \
  --csv "$tmp/n3.csv" --out "$tmp/n3.safetensors"
ok_same "3 ranks: the single-process final model" "$(hash_of "$tmp/n3.out")" "$h1"
ok "3 ranks: the hash is printed once (rank 0)" test "$(grep -c '^final model sha256' "$tmp/n3.out")" -eq 1
ok "3 ranks: one line per round" test "$(grep -c '^round ' "$tmp/n3.out")" -eq 4
ok "3 ranks: the coordinator on TCP with TLS" \
  grep -q '^mpi: 3 ranks: the coordinator on rank 0 at tcp://127.0.0.1:[0-9]* (TLS), the sites on ranks 1..2' "$tmp/n3.out"
ok "3 ranks: rank 0's line" grep -q '^rank 0: the coordinator, .* peak RSS [0-9.]* MB$' "$tmp/n3.out"
ok "3 ranks: rank 1 hosts 6 sites" grep -q '^rank 1: 6 sites, ' "$tmp/n3.out"
ok "3 ranks: rank 2 hosts 6 sites" grep -q '^rank 2: 6 sites, ' "$tmp/n3.out"
ok "3 ranks: the total" grep -q '^mpi: 3 ranks, peak RSS [0-9.]* MB in all' "$tmp/n3.out"
ok "3 ranks: the CSV is the single-process one but for time and bytes" \
  cmp -s <(cut -d, -f1-6 "$tmp/one.csv") <(cut -d, -f1-6 "$tmp/n3.csv")
ok "3 ranks: --out written" test -s "$tmp/n3.safetensors"
ok "3 ranks: no temporary CSV left" test ! -e "$tmp/n3.csv.tmp"

run_status "mpirun -n 2" 0 "$tmp/n2.out" -- "${MPIRUN[@]}" -n 2 "${SIM[@]}"
ok_same "2 ranks: the single-process final model" "$(hash_of "$tmp/n2.out")" "$h1"
ok "2 ranks: rank 1 hosts all 12 sites" grep -q '^rank 1: 12 sites, ' "$tmp/n2.out"

# Failures and an attack are drawn from the seed per site: the same across ranks, and the
# sites' counts of dropouts and stragglers reach rank 0's summary.
FAIL=(--dropout 0.3 --deadline-ms 5000 --stragglers 0.3 --straggler-delay 0.1
  --malicious 0.25 --attack sign-flip)
run_status "one process, failures and attack" 0 "$tmp/f1.out" -- "${SIM[@]}" "${FAIL[@]}"
run_status "mpirun -n 3, failures and attack" 0 "$tmp/f3.out" -- "${MPIRUN[@]}" -n 3 \
  "${SIM[@]}" "${FAIL[@]}"
hf=$(hash_of "$tmp/f1.out")
ok_differ "failures and an attack change the model" "$hf" "$h1"
ok_same "3 ranks with failures and an attack: the single-process model" "$(hash_of "$tmp/f3.out")" "$hf"
ok "9 dropouts and 3 stragglers in one process" \
  grep -q ', 9 dropouts, 3 stragglers$' "$tmp/f1.out"
ok "the same 9 dropouts and 3 stragglers over 3 ranks" \
  grep -q ', 9 dropouts, 3 stragglers$' "$tmp/f3.out"

# Errors: --mpi without a launch (one rank); a failure after MPI started names the rank and
# ends the launch with the command's status.
expect 2 "fedtune sim: --mpi: 1 rank: rank 0 runs the coordinator and the others the sites, so launch 2 or more" \
  -- "${SIM[@]}" --mpi
run_status "mpirun -n 3 with missing data" 1 "$tmp/e.out" -- "${MPIRUN[@]}" -n 3 "${SIM[@]}" \
  --data "$tmp/none.csv"
ok "the failure names a rank and the file" \
  grep -q "^fedtune sim: rank [0-2]: $tmp/none.csv: cannot open" "$tmp/e.out"
# --mpi-host names what the sites reach rank 0 at (then it listens on every interface); a
# host they cannot reach fails the launch once --mpi-connect-timeout has passed, naming
# the rank, the site and the endpoint.
run_status "mpirun -n 3 --mpi-host localhost" 0 "$tmp/h.out" -- "${MPIRUN[@]}" -n 3 \
  "${SIM[@]}" --mpi-host localhost
ok_same "--mpi-host localhost: the single-process final model" "$(hash_of "$tmp/h.out")" "$h1"
ok "--mpi-host: rank 0 listens on every interface" \
  grep -q '^mpi: 3 ranks: the coordinator on rank 0 at tcp://0.0.0.0:[0-9]* (TLS)' "$tmp/h.out"
run_status "mpirun -n 3, an unreachable --mpi-host" 1 "$tmp/u.out" -- "${MPIRUN[@]}" -n 3 \
  "${SIM[@]}" --mpi-host no-such-host.invalid --mpi-connect-timeout 0.5
ok "the unreachable host: the rank, the site and the endpoint" \
  grep -q "^fedtune sim: rank [12]: site-0[01][0-9] could not reach the coordinator at tcp://no-such-host.invalid:[0-9]* in 0.5 s$" "$tmp/u.out"
expect 2 "fedtune sim: --mpi-host needs an MPI launch (mpirun -n N fedtune sim ...)" \
  -- "${SIM[@]}" --mpi-host localhost
ok "no sanitizer report" bash -c "! grep -q -e Sanitizer -e 'runtime error:' $tmp/*.out"

report
