(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("report-data").textContent);
  var fmt = new Intl.NumberFormat("en-US");

  function kept(w, k) {
    // fixed_*: documents of other languages, held at their own thresholds (refine.languages)
    var docs = w.fixed_docs || 0, words = w.fixed_words || 0, i;
    if (w.upper) {
      for (i = 0; i <= k; i++) { docs += w.docs[i]; words += w.words[i]; }
    } else {
      for (i = k + 1; i < w.docs.length; i++) { docs += w.docs[i]; words += w.words[i]; }
    }
    return [docs, words];
  }

  function signed(n) { return (n > 0 ? "+" : "") + fmt.format(n); }

  function nearest(edges, value) {
    var best = 0, i;
    for (i = 1; i < edges.length; i++) {
      if (Math.abs(edges[i] - value) < Math.abs(edges[best] - value)) { best = i; }
    }
    return best;
  }

  Array.prototype.forEach.call(document.querySelectorAll(".whatif"), function (card) {
    var w = data.whatif[Number(card.getAttribute("data-index"))];
    var range = card.querySelector("input[type=range]");
    var number = card.querySelector("input[type=number]");
    var docsOut = card.querySelector(".kept-docs");
    var wordsOut = card.querySelector(".kept-words");
    var deltaOut = card.querySelector(".kept-delta");
    var line = card.querySelector("line.new");
    var bins = card.querySelectorAll("rect.bin");
    var binWidth = Number(card.getAttribute("data-bin-width"));

    function update(k) {
      var t = w.edges[k], r = kept(w, k);
      range.value = String(k);
      number.value = String(t);
      card.setAttribute("data-threshold", String(t));
      docsOut.textContent = fmt.format(r[0]);
      docsOut.setAttribute("data-value", String(r[0]));
      wordsOut.textContent = fmt.format(r[1]);
      wordsOut.setAttribute("data-value", String(r[1]));
      deltaOut.textContent = signed(r[0] - w.kept_now) + " documents, " +
        signed(r[1] - w.kept_words_now) + " words vs. the run";
      Array.prototype.forEach.call(bins, function (rect) {
        var i = Number(rect.getAttribute("data-bin"));
        var pass = w.upper ? i <= k : i > k;
        rect.setAttribute("class", pass ? "bin" : "bin fail");
      });
      var x = String((k + 1) * binWidth);
      line.setAttribute("x1", x);
      line.setAttribute("x2", x);
    }

    range.addEventListener("input", function () { update(Number(range.value)); });
    number.addEventListener("change", function () {
      var value = Number(number.value);
      if (!isNaN(value)) { update(nearest(w.edges, value)); }
    });
    card.querySelector("button.reset").addEventListener("click", function () {
      update(w.threshold_index);
    });
    update(w.threshold_index);
  });
})();
