#!/bin/sh
# Sample entry script (program C) for SSH mode. extcomp-remote runs it detached, with:
#   cwd                  the step's fresh work dir (inputs already pushed there)
#   "$@"                 the step's arguments
#   EXTCOMP_WORK_DIR     the work dir (same as cwd)
#   EXTCOMP_SCRIPTS_DIR  the site's own scripts (program D), remote-side_scripts/ beside this file
# Its stdout/stderr land in .extcomp/stdout.log and .extcomp/stderr.log; its exit code becomes the
# step's. Before it ends it deletes whatever must not leave this host: the whole work dir is
# pulled back afterwards.
set -eu

log=remote_program_exec.log
echo "entry: started $(date -u +%FT%TZ) in $PWD with $# argument(s)" >>"$log"

rc=0
"$EXTCOMP_SCRIPTS_DIR/sample_program.sh" "$@" >>"$log" 2>&1 || rc=$?

# Site policy: nothing named *.secret, and no secret/ dir, goes back to the workflow side.
find . -name '*.secret' -type f -exec rm -f {} +
rm -rf ./secret

echo "entry: finished $(date -u +%FT%TZ) with rc=$rc" >>"$log"
exit "$rc"
