# Makes Flotilla's directories on a host before anything is uploaded. Constant text.
export LC_ALL=C
set -u
R=${FLOTILLA_ROOT%/}
S="$R$FLOTILLA_STATE_DIR"
mkdir -p "$S/staging" "$S/txn" "$S/backup" "$R$FLOTILLA_RUNTIMES_DIR" && echo flotilla-ready
