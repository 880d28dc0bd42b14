// The live part of a page comes as rendered HTML over server-sent events; EventSource reconnects by
// itself. Forms with data-confirm ask before they are sent.
for (const region of document.querySelectorAll("[data-stream]")) {
  const source = new EventSource(region.dataset.stream);
  source.addEventListener("fragment", (event) => {
    region.innerHTML = event.data;
    region.dataset.updated = String(Date.now());
  });
}
document.addEventListener("submit", (event) => {
  const question = event.target.dataset.confirm;
  if (question && !window.confirm(question)) event.preventDefault();
});
