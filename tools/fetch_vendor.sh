#!/usr/bin/env bash
# Fetch the browser scripts that the rendered book serves itself, so that no page asks a CDN:
#   MathJax 3 (typesets the math), RequireJS and the ipywidgets embed manager (render saved widgets).
# Versions are pinned in tools/vendor/package-lock.json; `npm ci` checks every tarball against the
# sha512 integrity recorded there. The files land in book/vendor/ (not committed), which _config.yml
# names in html_static_path, so the build copies them to _build/html/_static/.
#
#   bash tools/fetch_vendor.sh        (`make book` runs it when book/vendor/ is missing or stale)
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v npm >/dev/null; then
    echo "tools/fetch_vendor.sh needs npm: install Node.js (Debian: apt-get install -y npm)" >&2
    exit 1
fi
npm ci --prefix tools/vendor --ignore-scripts --no-audit --no-fund --loglevel=error
modules=tools/vendor/node_modules
staging=$(mktemp -d)
chmod 755 "$staging"
trap 'rm -rf "$staging"' EXIT

# MathJax: the TeX+MathML -> CommonHTML bundle, its woff2 fonts, and the components it loads on demand
# (TeX extensions through autoload, the accessibility menu and its speech engine).
mathjax="$staging/mathjax"
mkdir -p "$mathjax/output"
cp "$modules/mathjax/es5/tex-mml-chtml.js" "$modules/mathjax/LICENSE" "$mathjax/"
cp -r "$modules/mathjax/es5/"{a11y,adaptors,input,sre,ui} "$mathjax/"
cp -r "$modules/mathjax/es5/output/chtml" "$mathjax/output/"

# RequireJS, which the ipywidgets embed manager needs to load its modules.
mkdir -p "$staging/requirejs"
cp "$modules/requirejs/require.js" "$staging/requirejs/"

# The ipywidgets embed manager (AMD build) with the icon fonts it loads beside itself.
widgets="$staging/html-manager"
mkdir -p "$widgets"
dist="$modules/@jupyter-widgets/html-manager/dist"
cp "$dist/embed-amd.js" "$dist/embed.js.LICENSE.txt" "$widgets/"
cp "$dist/"*.{woff2,woff,ttf,eot,svg} "$widgets/"

# Record what was copied; the Makefile uses this file as the sign of a complete fetch.
for package in mathjax requirejs @jupyter-widgets/html-manager; do
    node -p "const p = require('./$modules/$package/package.json'); p.name + ' ' + p.version"
done >"$staging/versions.txt"

rm -rf book/vendor
mkdir -p book
cp -r "$staging" book/vendor
rm -rf "$modules"
echo "book/vendor: $(tr '\n' ' ' <book/vendor/versions.txt)"
