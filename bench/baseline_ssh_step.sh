#!/bin/bash
# The hand-written SSH step the runner is measured against: what a person would type, with ssh
# and rsync defaults (no connection sharing, no cipher choice, no extra rsync flags):
#   ssh mkdir; rsync -a inputs in; ssh cd && run entry; rsync -a work dir back; ssh rm -rf.
# Five separate connections. Host key pinned with -o UserKnownHostsFile=... (StrictHostKeyChecking).
#
# usage: baseline_ssh_step.sh -p PORT -i KEY -k KNOWN_HOSTS -d REMOTE_DIR -e ENTRY -o RESULTS
#                             [-x EXCLUDE]... USER@HOST [INPUT...] [-- ENTRY_ARGS...]
# Prints one "phase START END" line per phase on stdout (mkdir push run pull clean total; bash's
# $EPOCHREALTIME, so timing forks nothing), for push/pull throughput measured alike on both sides.
set -eu

port=22 key= known_hosts= remote_dir= entry= results= excludes=
while getopts p:i:k:d:e:o:x: opt; do
  case "$opt" in
    p) port=$OPTARG ;;
    i) key=$OPTARG ;;
    k) known_hosts=$OPTARG ;;
    d) remote_dir=$OPTARG ;;
    e) entry=$OPTARG ;;
    o) results=$OPTARG ;;
    x) excludes="$excludes --exclude=$OPTARG" ;;
    *) echo "usage: see the header of $0" >&2; exit 64 ;;
  esac
done
shift $((OPTIND - 1))
[ $# -ge 1 ] && [ -n "$key" ] && [ -n "$remote_dir" ] && [ -n "$entry" ] && [ -n "$results" ] || {
  echo "usage: see the header of $0" >&2; exit 64; }
target=$1
shift

# Inputs are the words up to "--"; what follows goes to the entry script.
inputs=
while [ $# -gt 0 ] && [ "$1" != "--" ]; do
  inputs="$inputs $1"
  shift
done
[ "${1:-}" = "--" ] && shift

phase() { echo "$1 $2 $EPOCHREALTIME"; }  # phase NAME START

ssh_cmd="ssh -p $port -i $key -o UserKnownHostsFile=$known_hosts -o StrictHostKeyChecking=yes -o BatchMode=yes"
all=$EPOCHREALTIME

t=$EPOCHREALTIME
$ssh_cmd "$target" "mkdir -p $remote_dir"
phase mkdir "$t"

t=$EPOCHREALTIME
if [ -n "$inputs" ]; then
  # shellcheck disable=SC2086  # word splitting of the input list is intended
  rsync -a -e "$ssh_cmd" $inputs "$target:$remote_dir/"
fi
phase push "$t"

# The entry script's environment as the runner sets it (test_entry.sh reads it under set -u).
t=$EPOCHREALTIME
site=${entry%/*}
rc=0
$ssh_cmd "$target" "cd $remote_dir && EXTCOMP_WORK_DIR=$remote_dir \
EXTCOMP_SCRIPTS_DIR=$site/remote-side_scripts EXTCOMP_SITE_DIR=$site $entry $*" || rc=$?
phase run "$t"

t=$EPOCHREALTIME
mkdir -p "$results"
# shellcheck disable=SC2086
rsync -a $excludes -e "$ssh_cmd" "$target:$remote_dir/" "$results/"
phase pull "$t"

t=$EPOCHREALTIME
$ssh_cmd "$target" "rm -rf $remote_dir"
phase clean "$t"

phase total "$all"
exit "$rc"
