// shadow live view: the "copy" buttons (htmx does the refreshing; see templates/).
document.addEventListener("click", function (event) {
  var button = event.target.closest("[data-copy]");
  if (!button) return;
  var text = document.getElementById(button.dataset.copy).innerText;
  var done = function () { button.textContent = "copied"; };
  if (navigator.clipboard && window.isSecureContext) {
    navigator.clipboard.writeText(text).then(done, function () { selectText(button.dataset.copy); });
  } else {
    selectText(button.dataset.copy);
  }
});

function selectText(id) {  // no clipboard API (a plain-http host name): select it for Ctrl-C
  var range = document.createRange();
  range.selectNodeContents(document.getElementById(id));
  var selection = window.getSelection();
  selection.removeAllRanges();
  selection.addRange(range);
}
