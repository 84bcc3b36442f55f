#!/bin/sh
# Entry script (program C) for a Slurm site, in SSH mode: the site's program runs as a batch job.
# Install it as the entry script instead of execute_remote-side_program_ssh.sh (ssh_target role:
# ssh_target_entry_script_src), or beside it and name it with `extcomp-ssh run --entry`.
#
# extcomp-remote runs it detached in the step's work dir, which must be on storage the compute
# nodes share (ssh_target_base). It submits the program with sbatch, records the job id in
# $EXTCOMP_BATCH_JOB_FILE (.extcomp/batch-job in the work dir), waits for the job with a bounded
# poll of squeue, and exits with the program's exit code. Started again for the same work dir
# (`extcomp-ssh resume` after the host lost this script), it re-attaches to the recorded job
# instead of submitting a second one. SIGTERM (the step's timeout, `extcomp-ssh kill`) cancels
# the job with scancel.
#
# Site settings, all optional, in batch.conf beside this script (a shell file, root-owned):
#   EXTCOMP_BATCH_PROGRAM   the program the job runs (default remote-side_scripts/sample_program.sh)
#   EXTCOMP_BATCH_POLL      longest pause between two squeue calls, whole seconds (default 30)
#   EXTCOMP_BATCH_POLL_FIRST  the first pause (default 2; it doubles up to EXTCOMP_BATCH_POLL)
#   export SBATCH_PARTITION=... SBATCH_ACCOUNT=... SBATCH_TIMELIMIT=...   (sbatch's own variables)
#   export SLURM_CONF=...   only if the cluster's slurm.conf is not where the clients look
# Exit codes: the program's own; 124 the job hit its time limit; 143 the job was cancelled;
# 78 sbatch refused the job (a site configuration error: its message is in .extcomp/stderr.log;
# not 125, which the runner reports as a helper failure).
set -u

site_dir=${EXTCOMP_SITE_DIR:-$(dirname "$0")}
EXTCOMP_BATCH_PROGRAM="${EXTCOMP_SCRIPTS_DIR:-$site_dir/remote-side_scripts}/sample_program.sh"
EXTCOMP_BATCH_POLL=30
EXTCOMP_BATCH_POLL_FIRST=2
if [ -r "$site_dir/batch.conf" ]; then
  # shellcheck source=/dev/null
  . "$site_dir/batch.conf"
fi
# The pauses are whole seconds (shell arithmetic); anything else falls back to the defaults.
case "$EXTCOMP_BATCH_POLL_FIRST:$EXTCOMP_BATCH_POLL" in
  *[!0-9:]* | :* | *:) EXTCOMP_BATCH_POLL_FIRST=2 EXTCOMP_BATCH_POLL=30 ;;
esac
[ "$EXTCOMP_BATCH_POLL_FIRST" -ge 1 ] || EXTCOMP_BATCH_POLL_FIRST=1
job_file=${EXTCOMP_BATCH_JOB_FILE:-.extcomp/batch-job}
rc_file=batch-job.rc
log=batch-job.log

note() { echo "entry: $(date -u +%FT%TZ) $*" >>"$log"; }

if [ -s "$job_file" ]; then
  job=$(cat "$job_file")
  note "re-attaching to slurm job $job (not submitting again)"
else
  # The job script: runs the program with the step's arguments, records its exit code itself
  # (scontrol forgets finished jobs after MinJobAge; sacct needs slurmdbd).
  cat >batch-job.sh <<EOF
#!/bin/sh
cd "$PWD" || exit 125
rc=0
"$EXTCOMP_BATCH_PROGRAM" "\$@" || rc=\$?
echo "\$rc" >$rc_file.tmp && mv $rc_file.tmp $rc_file
exit "\$rc"
EOF
  chmod 700 batch-job.sh
  # stdout holds the id alone ("ID" or "ID;CLUSTER"); warnings go to stderr.
  out=$(sbatch --parsable "--job-name=extcomp-$(basename "$PWD")" "--chdir=$PWD" \
    "--output=$PWD/batch-job.out" "--error=$PWD/batch-job.err" ./batch-job.sh "$@" \
    2>batch-job.submit.err)
  rc=$?
  job=$(printf '%s\n' "$out" | tail -n 1)
  job=${job%%;*}
  case "$rc:$job" in
    0:[0-9]*) ;;
    *)
      said=$(cat batch-job.submit.err 2>/dev/null)
      echo "sbatch refused the job (rc $rc): ${said:-$out}" >&2
      note "sbatch refused the job (rc $rc): ${said:-$out}"
      exit 78
      ;;
  esac
  echo "$job" >"$job_file.tmp" && mv "$job_file.tmp" "$job_file"
  note "submitted slurm job $job"
fi

# A stop of the step is a stop of the job. The pause below runs in the background so that the
# signal is handled at once, not after the sleep.
trap 'note "stopping: scancel $job"; scancel "$job"; exit 143' TERM
trap 'scancel "$job"; exit 130' INT
trap 'scancel "$job"; exit 129' HUP

pause=$EXTCOMP_BATCH_POLL_FIRST
while :; do
  if state=$(squeue -h -j "$job" -o %T 2>&1); then
    [ -n "$state" ] || break # no longer queued or running
  else
    case "$state" in
      *"nvalid job id"*) break ;; # finished long ago: forgotten by the controller
      *) note "squeue failed (asking again in $pause s): $state" ;;
    esac
  fi
  sleep "$pause" &
  wait $!
  pause=$((pause * 2))
  [ "$pause" -le "$EXTCOMP_BATCH_POLL" ] || pause=$EXTCOMP_BATCH_POLL
done

# How it ended: the job script's own record; else what the controller still knows.
info=$(scontrol -o show job "$job" 2>/dev/null || :)
jstate=$(printf '%s\n' "$info" | tr ' ' '\n' | sed -n 's/^JobState=//p')
# The rc file may lag behind on a shared file system.
tries=0
while [ ! -s "$rc_file" ] && [ "$tries" -lt 10 ]; do
  case "$jstate" in TIMEOUT | CANCELLED* | NODE_FAIL | BOOT_FAIL | DEADLINE | OUT_OF_MEMORY) break ;; esac
  sleep 0.5
  tries=$((tries + 1))
done
case "$jstate" in
  TIMEOUT | DEADLINE) rc=124 ;;
  CANCELLED*) rc=143 ;;
  *)
    if [ -s "$rc_file" ]; then
      rc=$(cat "$rc_file")
    else
      code=$(printf '%s\n' "$info" | tr ' ' '\n' | sed -n 's/^ExitCode=\([0-9]*\):.*/\1/p')
      rc=${code:-1}
      [ "$rc" -ne 0 ] || rc=1 # ended without recording a code: never report success
    fi
    ;;
esac
note "slurm job $job ended (${jstate:-state unknown}) with rc=$rc"
cat batch-job.out 2>/dev/null || :
cat batch-job.err >&2 2>/dev/null || :
exit "$rc"
