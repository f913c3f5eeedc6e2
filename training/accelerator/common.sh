# Sourced by every accelerator script: where things live on the leased machine, the parts this
# call carried (.xfer/cN, see prepare.sh) gathered in $X, the carried wheels installed, and every
# package whose parts are all there unpacked.
ROOT=${ACCEL_ROOT:-/tmp/accel}
X=$ROOT/xfer M=$ROOT/models D=$ROOT/data R=$ROOT/recipe
PY=${PYTHON:-python3}
mkdir -p "$X" "$M" "$D" "$R"
for f in "${CARRIED:-.xfer}"/c*/*; do  # each copied under a temporary name, then renamed
    [ -e "$f" ] && [ ! -e "$X/${f##*/}" ] && cp "$f" "$X/.${f##*/}" && mv "$X/.${f##*/}" "$X/${f##*/}"
done
if compgen -G "$X/*.whl" >/dev/null && [ ! -e "$ROOT/site/.done" ]; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target "$ROOT/site" "$X"/*.whl && touch "$ROOT/site/.done"
fi
[ -d "$ROOT/site" ] && export PYTHONPATH=$ROOT/site${PYTHONPATH:+:$PYTHONPATH}
# the package is not installed there: the scripts (recipe.py) import it from the checkout they run in
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
export PYTHONUNBUFFERED=1

# unpack NAME DEST: once all of NAME's parts are here, DEST appears whole (renamed into place);
# the lock keeps a call and the chain from unpacking the same parts at once
unpack() {
    [ -e "$2" ] && return 0
    [ -e "$X/$1.json" ] && mkdir "$2.lock" 2>/dev/null || return 1
    if $PY scripts/accelerator.py unpack "$X/$1" "$2.partial" >/dev/null 2>"$ROOT/unpack-$1.err"; then
        mv "$2.partial" "$2" && echo "unpacked $1 -> $2"
    fi
    rm -rf "$2.partial"
    rmdir "$2.lock"
}
# the data under $D, every model (the teacher, the students' starts) under $M
for manifest in "$X"/*.json; do
    [ -e "$manifest" ] || continue
    name=${manifest##*/} && name=${name%.json}
    case $name in train | dev) unpack "$name" "$D/$name" ;; *) unpack "$name" "$M/$name" ;; esac
done
true
