#!/bin/sh
# Sample entry script (program C) for SSH mode. extcomp-remote runs it detached, with:
#   cwd                  the step's fresh work dir (inputs already pushed there)
#   "$@"                 the step's arguments
#   EXTCOMP_WORK_DIR     the work dir (same as cwd)
#   EXTCOMP_SCRIPTS_DIR  the site's own scripts (program D), remote-side_scripts/ beside this file
# Its stdout/stderr land in .extcomp/stdout.log and .extcomp/stderr.log; its exit code becomes the
# step's. The whole work dir is pulled back afterwards, so whatever must not leave this host goes
# first. The site's never-return list (never-return.conf beside this script, enforced by
# extcomp-remote however this script ends, SIGKILL included) is what guarantees it; the trap below
# is a second line of defence for a normal end, an error, and SIGTERM (the step timeout), SIGINT
# or SIGHUP.
set -eu

log=remote_program_exec.log
echo "entry: started $(date -u +%FT%TZ) in $PWD with $# argument(s)" >>"$log"

# Site policy: nothing named *.secret, and no secret/ dir, goes back to the workflow side.
forget_secrets() {
  find . \( -name '*.secret' \) \( -type f -o -type l \) -exec rm -f {} + 2>/dev/null || :
  rm -rf ./secret
}
trap forget_secrets EXIT
trap 'exit 143' TERM
trap 'exit 130' INT
trap 'exit 129' HUP

rc=0
"$EXTCOMP_SCRIPTS_DIR/sample_program.sh" "$@" >>"$log" 2>&1 || rc=$?

echo "entry: finished $(date -u +%FT%TZ) with rc=$rc" >>"$log"
exit "$rc"
