// Runs before the ipywidgets embed manager on pages that show saved widgets (see _config.yml).
(function () {
  // embed-amd.js defines several named modules (@jupyter-widgets/base, /controls, /base7,
  // /controls7, /html-manager and /html-manager/dist/libembed-amd). Webpack gives each one the
  // folder of its RequireJS URL as its public path, and asks for its icon fonts there. RequireJS
  // makes that URL from the module's name: "./@jupyter-widgets/<name>.js" beside the page unless a
  // path says otherwise, and a path matches whole name segments only. So every one of them is
  // placed in _static/html-manager/, where the fonts are: one path for the folder of names, one
  // for the name nested a level deeper.
  const managerFolder = new URL("html-manager", document.currentScript.src).href;
  window.requirejs.config({
    paths: {
      "@jupyter-widgets": managerFolder,
      "@jupyter-widgets/html-manager/dist": managerFolder,
    },
  });

  // The manager typesets widget labels with MathJax 2's `MathJax.Hub.Queue`; the book loads
  // MathJax 3, so once MathJax 3 is ready, give it a Hub that forwards to `typesetPromise`.
  // A label such as "$\beta$" is written with dollars, as in Jupyter; the book's MathJax reads
  // \( \) only (the dollars of the prose are converted when the book is built), so convert here.
  const config = window.MathJax;
  if (config === undefined) return; // no math on this page: the manager skips typesetting
  const typesetLabel = (element) => {
    if (element.childElementCount === 0) {
      element.textContent = element.textContent.replace(/\$([^$]+)\$/g, "\\($1\\)");
    }
    return MathJax.typesetPromise([element]);
  };
  const addHub = () => {
    MathJax.Hub = {
      Queue: ([, , element]) => {
        MathJax.startup.promise = MathJax.startup.promise.then(() => typesetLabel(element));
      },
    };
  };
  if (config.version !== undefined) {
    addHub(); // MathJax 3 already started
    return;
  }
  config.startup = config.startup || {};
  const ready = config.startup.ready;
  config.startup.ready = () => {
    if (ready) ready();
    else MathJax.startup.defaultReady();
    addHub();
  };
})();
