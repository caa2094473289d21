document.querySelectorAll('.filters button').forEach(function (button) {
  button.addEventListener('click', function () {
    var show = button.dataset.show ? button.dataset.show.split(' ') : null;
    document.querySelectorAll('.filters button').forEach(function (b) { b.classList.toggle('on', b === button); });
    document.querySelectorAll('#rows tbody tr').forEach(function (row) {
      row.style.display = !show || show.indexOf(row.dataset.flip) >= 0 ? '' : 'none';
    });
  });
});
