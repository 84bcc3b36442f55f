#!/bin/sh
# Sample site program (program D): summarise every input file of the work dir into summary.txt,
# and leave a file that the entry script must not let leave the host (licence.secret).
set -eu
out=summary.txt
: >"$out"
for f in *; do
  case "$f" in summary.txt|remote_program_exec.log) continue ;; esac
  [ -f "$f" ] || continue
  printf '%s\t%s lines\t%s words\t%s bytes\n' "$f" "$(wc -l <"$f")" "$(wc -w <"$f")" "$(wc -c <"$f")" >>"$out"
done
echo "licence server token: do-not-export" >licence.secret
echo "sample_program: summarised $(wc -l <"$out") file(s); arguments: $*"
