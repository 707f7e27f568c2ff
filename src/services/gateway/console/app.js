/*
 * The ops console: every 2 s it reads this listener's /admin/instances (health, breakers) and
 * /metrics (the gateway's calls to each service: rates, errors, latency from histogram bucket
 * deltas), the trace list and the recent log lines (filtered by trace id, service and lowest
 * level); a click on a trace draws its waterfall and shows its log lines, a click on a line's
 * trace id draws that trace. Plain DOM, no framework; Chart.js draws the lines. Only
 * same-origin requests (the page's Content-Security-Policy).
 *
 * For tests and scripts the page states what it shows: <body data-health="healthy|degraded|
 * down|unknown" data-services="user,order,..."> and data-health on each service row; each
 * log row carries data-trace-id, data-service and data-level, and #logs data-trace-id the
 * filter it shows.
 */
(function () {
  'use strict';

  var POLL_MS = 2000;
  var POINTS = 60; /* two minutes of 2 s samples */
  var KNOWN = ['gateway', 'user', 'order', 'inventory', 'payment'];
  var PALETTE = ['#5b6ee1', '#8e44ad', '#e67e22', '#16a085', '#2d7dd2', '#c0392b', '#7f8c8d'];

  var state = {
    prev: null,        /* the last /metrics sample: {t, ups: {name: {total, errors, buckets}}} */
    charts: {},        /* service -> Chart */
    labels: [],        /* shared x labels (times) */
    series: {},        /* service -> {rps, eps, p50, p99} arrays */
    latest: {},        /* service -> the last computed {rps, errRate, p50, p99} */
    selected: null,    /* trace id drawn in the waterfall */
    services: [],
    logServices: [],
    logSeq: 0,         /* the latest log query: an older answer arriving later is not drawn */
    polling: false
  };

  function $(id) { return document.getElementById(id); }

  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }

  function serviceColor(name) {
    var i = KNOWN.indexOf(name);
    if (i >= 0) return PALETTE[i];
    var h = 0;
    for (var k = 0; k < name.length; k++) h = (h * 31 + name.charCodeAt(k)) >>> 0;
    return PALETTE[h % PALETTE.length];
  }

  /* the shop's services in the order a request meets them, then any other by name */
  function byFlow(names) {
    return names.slice().sort(function (a, b) {
      var x = KNOWN.indexOf(a), y = KNOWN.indexOf(b);
      if (x < 0 && y < 0) return a < b ? -1 : a > b ? 1 : 0;
      return (x < 0 ? KNOWN.length : x) - (y < 0 ? KNOWN.length : y);
    });
  }

  function chip(name) {
    var c = el('span', 'chip', name);
    c.style.background = serviceColor(name);
    return c;
  }

  function fmtMs(v) {
    if (v === null || v === undefined || isNaN(v)) return '–';
    if (v >= 1000) return (v / 1000).toFixed(2) + ' s';
    if (v >= 10) return v.toFixed(0) + ' ms';
    return v.toFixed(1) + ' ms';
  }

  function fmtNum(v, digits) {
    if (v === null || v === undefined || isNaN(v)) return '–';
    return v.toFixed(digits);
  }

  function getJSON(url) {
    return fetch(url, {cache: 'no-store'}).then(function (r) {
      if (!r.ok) throw new Error(url + ': ' + r.status);
      return r.json();
    });
  }

  function getText(url) {
    return fetch(url, {cache: 'no-store'}).then(function (r) {
      if (!r.ok) throw new Error(url + ': ' + r.status);
      return r.text();
    });
  }

  /* ---- /metrics (Prometheus text) ---- */

  function parseLabels(s) {
    var out = {};
    var re = /(\w+)="((?:[^"\\]|\\.)*)"/g;
    var m;
    while ((m = re.exec(s)) !== null) out[m[1]] = m[2].replace(/\\(.)/g, '$1');
    return out;
  }

  /* {upstream: {total, errors, buckets: [[le, cumulative]...]}} from the client families */
  function parseMetrics(text) {
    var ups = {};
    function up(name) {
      if (!ups[name]) ups[name] = {total: 0, errors: 0, buckets: {}};
      return ups[name];
    }
    var lines = text.split('\n');
    for (var i = 0; i < lines.length; i++) {
      var line = lines[i];
      if (line.charAt(0) === '#' || line.indexOf('http_client_') !== 0) continue;
      var m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)/.exec(line);
      if (!m) continue;
      var labels = parseLabels(m[2] || '');
      var v = parseFloat(m[3]);
      if (!labels.upstream || isNaN(v)) continue;
      if (m[1] === 'http_client_requests_total') {
        var u = up(labels.upstream);
        u.total += v;
        /* a 5xx, or no answer at all (timeout, unreachable, circuit_open...) */
        if (!/^[1-4]\d\d$/.test(labels.status || '')) u.errors += v;
      } else if (m[1] === 'http_client_request_duration_seconds_bucket') {
        up(labels.upstream).buckets[labels.le] = v;
      }
    }
    return ups;
  }

  /* histogram_quantile over the bucket deltas, interpolating inside the bucket */
  function quantile(q, now, before) {
    var les = Object.keys(now).map(function (k) {
      return {le: k === '+Inf' ? Infinity : parseFloat(k), d: now[k] - ((before && before[k]) || 0)};
    }).sort(function (a, b) { return a.le - b.le; });
    if (!les.length) return null;
    var total = les[les.length - 1].d;
    if (!(total > 0)) return null;
    var rank = q * total, prevLe = 0, prevCount = 0;
    for (var i = 0; i < les.length; i++) {
      if (les[i].d >= rank) {
        if (les[i].le === Infinity) return prevLe * 1000;
        var inBucket = les[i].d - prevCount;
        var frac = inBucket > 0 ? (rank - prevCount) / inBucket : 1;
        return (prevLe + (les[i].le - prevLe) * frac) * 1000;
      }
      prevLe = les[i].le;
      prevCount = les[i].d;
    }
    return null;
  }

  function rates(ups, t) {
    var prev = state.prev;
    state.prev = {t: t, ups: ups};
    var out = {};
    if (!prev) return out;
    var dt = (t - prev.t) / 1000;
    Object.keys(ups).forEach(function (name) {
      var now = ups[name], was = prev.ups[name] || {total: 0, errors: 0, buckets: {}};
      var dTotal = now.total - was.total, dErr = now.errors - was.errors;
      if (dt <= 0 || dTotal < 0 || dErr < 0) return; /* restarted: counters began again */
      out[name] = {
        rps: dTotal / dt,
        eps: dErr / dt,
        errRate: dTotal > 0 ? dErr / dTotal : 0,
        p50: quantile(0.5, now.buckets, was.buckets),
        p99: quantile(0.99, now.buckets, was.buckets)
      };
    });
    return out;
  }

  /* ---- charts ---- */

  function ensureChart(name) {
    if (state.charts[name] || typeof Chart === 'undefined') return;
    var box = el('div', 'chart');
    box.dataset.service = name;
    var title = el('h3');
    title.appendChild(chip(name));
    box.appendChild(title);
    var holder = el('div', 'canvas');
    var canvas = el('canvas');
    canvas.setAttribute('aria-label', name + ' traffic');
    holder.appendChild(canvas);
    box.appendChild(holder);
    $('charts').appendChild(box);
    var s = state.series[name] = {rps: [], eps: [], p50: [], p99: []};
    var pad = state.labels.length;
    ['rps', 'eps', 'p50', 'p99'].forEach(function (k) {
      for (var i = 0; i < pad; i++) s[k].push(null);
    });
    var color = serviceColor(name);
    state.charts[name] = new Chart(canvas, {
      type: 'line',
      data: {
        labels: state.labels,
        datasets: [
          {label: 'req/s', data: s.rps, borderColor: color, backgroundColor: color, yAxisID: 'y'},
          {label: 'errors/s', data: s.eps, borderColor: '#c62828', backgroundColor: '#c62828',
            yAxisID: 'y'},
          {label: 'p50 ms', data: s.p50, borderColor: '#7f8c8d', backgroundColor: '#7f8c8d',
            borderDash: [4, 3], yAxisID: 'ms'},
          {label: 'p99 ms', data: s.p99, borderColor: '#34495e', backgroundColor: '#34495e',
            yAxisID: 'ms'}
        ]
      },
      options: {
        animation: false,
        responsive: true,
        maintainAspectRatio: false,
        spanGaps: true,
        /* no dots but the latest value's, which also shows a series of one point */
        elements: {
          point: {radius: function (ctx) {
            return ctx.dataIndex === ctx.dataset.data.length - 1 ? 2.5 : 0;
          }},
          line: {borderWidth: 1.5, tension: 0.2}
        },
        interaction: {mode: 'index', intersect: false},
        plugins: {legend: {labels: {boxWidth: 10, font: {size: 11}}}},
        scales: {
          x: {ticks: {maxTicksLimit: 6, font: {size: 10}}},
          y: {beginAtZero: true, position: 'left', title: {display: true, text: 'per s'},
            ticks: {font: {size: 10}}},
          ms: {beginAtZero: true, position: 'right', grid: {drawOnChartArea: false},
            title: {display: true, text: 'ms'}, ticks: {font: {size: 10}}}
        }
      }
    });
  }

  function pushSample(label, computed) {
    state.labels.push(label);
    if (state.labels.length > POINTS) state.labels.shift();
    Object.keys(state.series).forEach(function (name) {
      var s = state.series[name], c = computed[name] || null;
      s.rps.push(c ? c.rps : null);
      s.eps.push(c ? c.eps : null);
      s.p50.push(c ? c.p50 : null);
      s.p99.push(c ? c.p99 : null);
      ['rps', 'eps', 'p50', 'p99'].forEach(function (k) {
        while (s[k].length > state.labels.length) s[k].shift();
      });
      state.charts[name].update('none');
    });
  }

  /* ---- services ---- */

  function serviceHealth(u) {
    var insts = u.instances || [];
    var healthy = insts.filter(function (i) { return i.state === 'healthy'; }).length;
    var breaker = (u.breaker && u.breaker.state) || 'closed';
    if (!insts.length || !healthy || breaker === 'open') return 'down';
    if (healthy < insts.length || breaker !== 'closed') return 'degraded';
    return 'healthy';
  }

  function renderServices(status) {
    var tbody = $('services').tBodies[0];
    var rows = document.createDocumentFragment();
    var overall = 'healthy', names = [];
    var ups = status.upstreams || [];
    ups.forEach(function (u) {
      var h = serviceHealth(u), m = state.latest[u.name];
      names.push(u.name);
      if (h === 'down') overall = 'down';
      else if (h === 'degraded' && overall === 'healthy') overall = 'degraded';
      var tr = el('tr');
      tr.dataset.service = u.name;
      tr.dataset.health = h;
      var td = el('td');
      td.appendChild(chip(u.name));
      tr.appendChild(td);
      td = el('td');
      td.appendChild(el('span', 'badge ' + h, h));
      tr.appendChild(td);
      td = el('td');
      var b = (u.breaker && u.breaker.state) || 'closed';
      td.appendChild(el('span', 'badge ' + b, b.replace('_', '-')));
      if (u.breaker && u.breaker.override && u.breaker.override !== 'auto')
        td.appendChild(el('span', 'muted', ' forced'));
      tr.appendChild(td);
      td = el('td');
      (u.instances || []).forEach(function (i) {
        var dot = el('span', 'inst ' + i.state);
        dot.title = i.address + ': ' + i.state + ', ' + i.active_requests + ' in flight, ' +
          i.ejections + ' ejections';
        td.appendChild(dot);
      });
      td.appendChild(el('span', 'muted', ' ' + (u.instances || []).length));
      tr.appendChild(td);
      tr.appendChild(el('td', 'num', m ? fmtNum(m.rps, 1) : '–'));
      tr.appendChild(el('td', 'num', m ? fmtMs(m.p50) : '–'));
      tr.appendChild(el('td', 'num', m ? fmtMs(m.p99) : '–'));
      tr.appendChild(el('td', 'num', m ? fmtNum(m.errRate * 100, 1) + ' %' : '–'));
      rows.appendChild(tr);
      ensureChart(u.name);
    });
    if (!ups.length) overall = 'unknown';
    tbody.replaceChildren(rows);
    document.body.dataset.health = overall;
    document.body.dataset.services = names.join(',');
    var badge = $('overall');
    badge.className = 'badge ' + overall;
    badge.textContent = overall === 'healthy' ? 'all services healthy' : overall;
    if (names.join(',') !== state.services.join(',')) {
      state.services = names;
      var sel = $('trace-service'), keep = sel.value;
      var opts = ['gateway'].concat(names.filter(function (n) { return n !== 'gateway'; }));
      while (sel.options.length > 1) sel.remove(1);
      opts.forEach(function (n) { sel.add(new Option(n, n)); });
      sel.value = keep;
    }
  }

  /* ---- traces ---- */

  function clock(ms) {
    var d = new Date(ms);
    return d.toLocaleTimeString([], {hour12: false}) + '.' +
      String(d.getMilliseconds()).padStart(3, '0');
  }

  function renderTraces(doc) {
    var tbody = $('traces').tBodies[0];
    var rows = document.createDocumentFragment();
    (doc.traces || []).forEach(function (t) {
      var tr = el('tr');
      tr.dataset.traceId = t.trace_id;
      tr.dataset.services = t.services.join(',');
      tr.dataset.background = t.background ? '1' : '0';
      if (t.trace_id === state.selected) tr.className = 'selected';
      tr.appendChild(el('td', null, clock(t.start_ms)));
      var root = el('td', 'root', t.root_name);
      root.title = t.root_service + ': ' + t.root_name;
      if (t.error) root.appendChild(el('span', 'err-mark', '!'));
      tr.appendChild(root);
      var svc = el('td', 'svcs');
      byFlow(t.services).forEach(function (s) { svc.appendChild(chip(s)); });
      tr.appendChild(svc);
      tr.appendChild(el('td', 'num', fmtNum(t.duration_ms, 1)));
      tr.appendChild(el('td', 'num', t.span_count));
      rows.appendChild(tr);
    });
    tbody.replaceChildren(rows);
    $('traces-empty').hidden = (doc.traces || []).length > 0;
  }

  /* spans in tree order (children by start under their parent), each with its depth */
  function treeOrder(spans) {
    var byId = {}, children = {}, roots = [], out = [];
    spans.forEach(function (s) { byId[s.span_id] = s; });
    spans.forEach(function (s) {
      var p = s.parent_span_id;
      if (p && byId[p] && p !== s.span_id) (children[p] = children[p] || []).push(s);
      else roots.push(s); /* a root, or its parent not received */
    });
    var seen = {};
    function walk(s, depth) {
      if (seen[s.span_id]) return;
      seen[s.span_id] = true;
      out.push({span: s, depth: depth});
      (children[s.span_id] || []).forEach(function (c) { walk(c, depth + 1); });
    }
    roots.forEach(function (r) { walk(r, 0); });
    return out;
  }

  function renderWaterfall(doc) {
    var box = $('waterfall');
    var frag = document.createDocumentFragment();
    var spans = doc.spans || [];
    var t0 = Infinity, t1 = -Infinity;
    spans.forEach(function (s) {
      t0 = Math.min(t0, s.start_ms);
      t1 = Math.max(t1, s.start_ms + s.duration_ms);
    });
    var total = Math.max(t1 - t0, 0.001);
    $('waterfall-title').textContent = 'Trace ' + doc.trace_id.slice(0, 12) + '… ' +
      fmtMs(doc.duration_ms);
    var head = el('div', 'wf-head');
    byFlow(doc.services).forEach(function (s) { head.appendChild(chip(s)); });
    head.appendChild(el('span', 'muted', spans.length + ' spans, root ' + doc.root_name));
    var logs = el('a', 'trace-link wf-logs', 'its log lines');
    logs.href = '#logs';
    logs.addEventListener('click', function (ev) {
      ev.preventDefault();
      $('log-trace').value = doc.trace_id;
      pollLogs().catch(showError);
      $('logs').scrollIntoView({block: 'nearest'});
    });
    head.appendChild(logs);
    frag.appendChild(head);
    treeOrder(spans).forEach(function (item) {
      var s = item.span;
      var row = el('div', 'wf-row' + (s.error ? ' error' : ''));
      row.dataset.spanId = s.span_id;
      row.dataset.service = s.service;
      var label = el('div', 'wf-label');
      label.style.paddingLeft = (item.depth * 14) + 'px';
      label.appendChild(chip(s.service));
      label.appendChild(document.createTextNode(s.name));
      if (s.error) label.appendChild(el('span', 'err-mark', '!'));
      label.title = s.service + ' ' + s.kind + ': ' + s.name;
      var track = el('div', 'wf-track');
      var bar = el('div', 'wf-bar' + (s.error ? ' error' : ''));
      var left = (s.start_ms - t0) / total * 100, width = s.duration_ms / total * 100;
      bar.style.left = left + '%';
      bar.style.width = Math.max(width, 0.2) + '%';
      bar.style.background = serviceColor(s.service);
      var dur = el('span', 'wf-dur', fmtMs(s.duration_ms));
      if (left + width > 85) { /* no room after the bar: inside its end */
        dur.className = 'wf-dur inside';
        dur.style.right = Math.max(100 - left - width, 0) + '%';
      } else {
        dur.style.left = (left + width + 0.5) + '%';
      }
      track.appendChild(bar);
      track.appendChild(dur);
      row.appendChild(label);
      row.appendChild(track);
      row.addEventListener('click', function () {
        var next = row.nextSibling;
        if (next && next.className === 'wf-attrs') { next.remove(); return; }
        var attrs = el('div', 'wf-attrs', JSON.stringify({
          span_id: s.span_id, parent_span_id: s.parent_span_id, kind: s.kind,
          instance: s.instance, status: s.status, attributes: s.attributes
        }, null, 1));
        row.after(attrs);
      });
      frag.appendChild(row);
    });
    box.replaceChildren(frag);
    box.dataset.traceId = doc.trace_id;
    box.dataset.services = doc.services.join(',');
  }

  function showTrace(id) {
    state.selected = id;
    if ($('log-trace').value !== id) {
      $('log-trace').value = id;
      pollLogs();
    }
    var rows = $('traces').tBodies[0].rows;
    for (var i = 0; i < rows.length; i++)
      rows[i].className = rows[i].dataset.traceId === id ? 'selected' : '';
    return getJSON('/ops/api/traces/' + encodeURIComponent(id)).then(renderWaterfall)
      .catch(function (e) { showError(e); });
  }

  /* ---- logs ---- */

  var TRACE_ID = /^[0-9a-f]{32}$/;

  function fieldsCell(attrs) {
    var td = el('td', 'fields');
    Object.keys(attrs || {}).forEach(function (k, i) {
      var v = attrs[k];
      if (i) td.appendChild(document.createTextNode(' '));
      td.appendChild(el('b', null, k));
      td.appendChild(document.createTextNode('=' +
        (typeof v === 'string' ? v : JSON.stringify(v))));
    });
    return td;
  }

  function renderLogs(doc, traceId) {
    var tbody = $('logs').tBodies[0];
    var rows = document.createDocumentFragment();
    (doc.logs || []).forEach(function (l) {
      var tr = el('tr');
      tr.dataset.service = l.service;
      tr.dataset.level = l.level;
      if (l.trace_id) tr.dataset.traceId = l.trace_id;
      tr.appendChild(el('td', null, clock(l.time_ms)));
      var td = el('td');
      td.appendChild(chip(l.service));
      tr.appendChild(td);
      tr.appendChild(el('td', null)).appendChild(el('span', 'lvl lvl-' + l.level, l.level));
      tr.appendChild(el('td', 'msg', l.msg));
      tr.appendChild(fieldsCell(l.attributes));
      td = el('td');
      if (l.trace_id) {
        var a = el('a', 'trace-link', l.trace_id.slice(0, 12) + '…');
        a.href = '#waterfall';
        a.title = 'trace ' + l.trace_id;
        a.dataset.traceId = l.trace_id;
        td.appendChild(a);
      }
      tr.appendChild(td);
      rows.appendChild(tr);
    });
    tbody.replaceChildren(rows);
    $('logs').dataset.traceId = traceId;
    var n = (doc.logs || []).length;
    $('logs-empty').hidden = n > 0;
    $('log-count').textContent = n < doc.matched ? n + ' newest of ' + doc.matched : n + ' lines';
    var names = byFlow(doc.services || []);
    if (names.join(',') !== state.logServices.join(',')) {
      state.logServices = names;
      var sel = $('log-service'), keep = sel.value;
      while (sel.options.length > 1) sel.remove(1);
      names.forEach(function (name) { sel.add(new Option(name, name)); });
      if (keep && names.indexOf(keep) < 0) sel.add(new Option(keep, keep));
      sel.value = keep;
    }
  }

  /* The lines the filters ask for; a trace id being typed (not yet 32 hex digits) asks
   * nothing and is marked. */
  function pollLogs() {
    var input = $('log-trace');
    var tid = input.value.trim().toLowerCase();
    var valid = tid === '' || TRACE_ID.test(tid);
    input.classList.toggle('invalid', !valid);
    if (!valid) return Promise.resolve();
    var svc = $('log-service').value, level = $('log-level').value;
    var url = '/ops/api/logs?limit=200' + (tid ? '&trace_id=' + tid : '') +
      (svc ? '&service=' + encodeURIComponent(svc) : '') + (level ? '&level=' + level : '');
    var seq = ++state.logSeq;
    return getJSON(url).then(function (doc) {
      if (seq === state.logSeq) renderLogs(doc, tid);
    });
  }

  /* ---- the loop ---- */

  function showError(e) {
    var box = $('error');
    if (e) {
      box.textContent = String(e.message || e);
      box.hidden = false;
    } else {
      box.hidden = true;
    }
  }

  function poll() {
    if (state.polling) return;
    state.polling = true;
    var t = Date.now();
    var svc = $('trace-service').value;
    var traceUrl = '/ops/api/traces?limit=50' + (svc ? '&service=' + encodeURIComponent(svc) : '') +
      ($('trace-background').checked ? '' : '&background=0');
    Promise.all([getJSON('/admin/instances'), getText('/metrics'), getJSON(traceUrl),
      pollLogs()])
      .then(function (r) {
        state.latest = rates(parseMetrics(r[1]), t);
        renderServices(r[0]);
        renderTraces(r[2]);
        $('updated').textContent = 'updated ' + new Date(t).toLocaleTimeString([], {hour12: false});
        showError(null);
        /* the charts after the table has been painted: making the first ones takes a few
         * hundred ms of the main thread, which the table and the lists need not wait for */
        var label = new Date(t).toLocaleTimeString([], {hour12: false}), sample = state.latest;
        requestAnimationFrame(function () {
          setTimeout(function () { pushSample(label, sample); }, 0);
        });
      })
      .catch(function (e) {
        document.body.dataset.health = 'unknown';
        var badge = $('overall');
        badge.className = 'badge down';
        badge.textContent = 'gateway unreachable';
        showError(e);
      })
      .then(function () { state.polling = false; });
  }

  document.addEventListener('DOMContentLoaded', function () {
    $('traces').tBodies[0].addEventListener('click', function (ev) {
      var tr = ev.target.closest('tr');
      if (tr && tr.dataset.traceId) showTrace(tr.dataset.traceId);
    });
    $('trace-service').addEventListener('change', poll);
    $('trace-background').addEventListener('change', poll);
    $('logs').tBodies[0].addEventListener('click', function (ev) {
      var a = ev.target.closest('a.trace-link');
      if (!a) return;
      ev.preventDefault();
      showTrace(a.dataset.traceId);
      $('waterfall').scrollIntoView({block: 'nearest'});
    });
    $('log-trace').addEventListener('input', function () {
      pollLogs().catch(showError);
    });
    $('log-service').addEventListener('change', function () { pollLogs().catch(showError); });
    $('log-level').addEventListener('change', function () { pollLogs().catch(showError); });
    poll();
    setInterval(poll, POLL_MS);
  });

  /* for tests and the curious: draw a trace by id */
  window.opsConsole = {showTrace: showTrace, pollLogs: pollLogs};
})();
