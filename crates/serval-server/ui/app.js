// serval console: reads /api/v1 every 2 s and draws the overview (#/) and one endpoint's page
// (#/endpoint/<url>); with an admin key it also changes canary weights, pauses, resumes and aborts
// rollouts, removes endpoints and publishes models through the admin API, each after a confirmation. Plain DOM, text only (no innerHTML: error texts and names come from users);
// charts by uPlot (vendored). Nothing is loaded from anywhere but this server.
'use strict';
(function () {
  const REFRESH_MS = 2000;
  const main = document.getElementById('main');
  let key = sessionStorage.getItem('serval-key') || '';
  let view = null; // { route, update(data), destroy() }
  let timer = null;
  let loading = false;
  // Seconds the headline numbers cover (?window= of the API).
  let windowSeconds = Number(sessionStorage.getItem('serval-window')) || 60;
  // With an admin key (server.can_change) the page offers changes through the admin API, each
  // after a confirmation and written against the revision shown (If-Match).
  let canChange = false;
  let shownService = null;

  // ---- helpers -------------------------------------------------------------------------------
  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === 'class') el.className = v;
      else if (k === 'text') el.textContent = v;
      else if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
      else el.setAttribute(k, v === true ? '' : v);
    }
    for (const c of children.flat()) {
      if (c === null || c === undefined || c === false) continue;
      el.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return el;
  }
  const fmt = {
    num(v, digits = 1) {
      if (v === null || v === undefined) return '–';
      if (Math.abs(v) >= 100) return v.toFixed(0);
      return v.toFixed(digits);
    },
    ms(v) { return v === null || v === undefined ? '–' : (v < 10 ? v.toFixed(2) : v.toFixed(1)) + ' ms'; },
    pct(v) { return v === null || v === undefined ? '–' : (100 * v).toFixed(v > 0 && v < 0.01 ? 2 : 1) + ' %'; },
    time(ms) { return ms ? new Date(ms).toLocaleTimeString() : '–'; },
    ago(ms) {
      if (!ms) return '–';
      const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
      return s < 60 ? s + ' s ago' : s < 3600 ? Math.round(s / 60) + ' min ago' : Math.round(s / 3600) + ' h ago';
    },
  };
  const endpointHref = (url) => '#/endpoint/' + url.split('/').map(encodeURIComponent).join('/');
  const badge = (text, kind) => h('span', { class: 'badge ' + (kind || text), 'data-testid': 'badge' }, text);

  async function api(path) {
    const headers = key ? { Authorization: 'Bearer ' + key } : {};
    const response = await fetch(path, { headers, cache: 'no-store' });
    if (response.status === 401 || response.status === 403) {
      const body = await response.json().catch(() => ({}));
      askForKey(body.detail || response.statusText);
      throw new Error('unauthorized');
    }
    const body = await response.json();
    if (!response.ok) throw new Error(body.detail || response.statusText);
    return body;
  }

  function askForKey(message) {
    const box = document.getElementById('auth');
    box.hidden = false;
    document.getElementById('auth-error').textContent = key ? message : '';
  }
  document.getElementById('auth-form').addEventListener('submit', (e) => {
    e.preventDefault();
    key = document.getElementById('auth-key').value.trim();
    sessionStorage.setItem('serval-key', key);
    document.getElementById('auth').hidden = true;
    refresh();
  });

  function setStatus(server, error) {
    const status = document.getElementById('status');
    if (error) {
      status.replaceChildren(badge('no answer', 'failed'), ' ', error);
      return;
    }
    const store = server.store.reachable ? '' : ' · store unreachable';
    status.replaceChildren(
      'revision ', h('b', { 'data-testid': 'revision' }, server.revision),
      ' · instance ', h('code', {}, server.instance.slice(0, 8)),
      store, ' · updated ', h('span', { 'data-testid': 'updated' }, new Date().toLocaleTimeString()));
  }

  function setService(service) {
    shownService = service;
    document.getElementById('service').replaceChildren(service
      ? h('span', {}, h('b', { 'data-testid': 'service-name' }, service.name), ' ', h('code', { 'data-testid': 'service-id' }, service.id),
        service.project ? ' · project ' + service.project : '')
      : 'no service loaded yet');
  }

  // A change through the admin API, after the user confirmed `question`; the outcome is shown
  // in the notice line. Resolves to whether it was made.
  async function act(question, method, path, body) {
    const notice = document.getElementById('notice');
    if (!shownService || !window.confirm(question)) return false;
    const headers = { 'If-Match': '"' + shownService.revision + '"' };
    if (key) headers.Authorization = 'Bearer ' + key;
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    notice.className = 'muted';
    notice.textContent = 'saving…';
    try {
      const response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
      const reply = await response.json().catch(() => ({}));
      if (!response.ok) {
        notice.className = 'error';
        notice.textContent = response.status === 412
          ? 'Not saved: the service changed since this page showed it. Check the new state and try again.'
          : 'Not saved: ' + (reply.detail || response.statusText);
        return false;
      }
      notice.className = 'ok';
      notice.textContent = 'Saved' + (reply.revision ? ' (service revision ' + reply.revision + ')' : '') +
        ((reply.warnings || []).length ? ' — ' + reply.warnings.join('; ') : '') + '.';
      refresh();
      return true;
    } catch (err) {
      notice.className = 'error';
      notice.textContent = 'Not saved: ' + err.message;
      return false;
    }
  }
  const servicePath = (...parts) => '/api/v1/services/' + encodeURIComponent(shownService.id) + '/' +
    parts.map((p) => p.split('/').map(encodeURIComponent).join('/')).join('/');

  // JSON with lists of numbers kept on one line.
  function pretty(value, indent = '') {
    const inner = indent + '  ';
    if (Array.isArray(value)) {
      if (value.every((v) => v === null || typeof v !== 'object')) return JSON.stringify(value).replaceAll(',', ', ');
      return '[\n' + value.map((v) => inner + pretty(v, inner)).join(',\n') + '\n' + indent + ']';
    }
    if (value && typeof value === 'object') {
      const entries = Object.entries(value);
      if (!entries.length) return '{}';
      return '{\n' + entries.map(([k, v]) => inner + JSON.stringify(k) + ': ' + pretty(v, inner)).join(',\n') + '\n' + indent + '}';
    }
    return JSON.stringify(value);
  }

  // ---- charts (uPlot) ------------------------------------------------------------------------
  const PALETTE = ['#2563eb', '#dc2626', '#16a34a', '#d97706', '#7c3aed', '#0891b2', '#db2777', '#4b5563'];

  function lineChart(container, title, unit) {
    let plot = null;
    let names = null;
    function build(seriesNames, data) {
      if (plot) plot.destroy();
      names = seriesNames.join('\u0000');
      const width = Math.max(280, container.clientWidth || 600);
      plot = new uPlot({
        title, width, height: 200,
        scales: { x: { time: true, range: (u, min, max) => [max - 300, max] }, y: { range: (u, min, max) => [0, Math.max(max || 0, 1e-9) * 1.15] } },
        axes: [{}, { label: unit, size: 60 }],
        series: [{}].concat(seriesNames.map((name, i) => ({
          label: name, stroke: PALETTE[i % PALETTE.length], width: 2, spanGaps: false,
          value: (u, v) => v === null || v === undefined ? '–' : fmt.num(v, 2),
        }))),
      }, data, container);
    }
    return {
      set(seriesNames, data) {
        if (!plot || names !== seriesNames.join('\u0000')) build(seriesNames, data);
        else plot.setData(data);
      },
      destroy() { if (plot) plot.destroy(); },
    };
  }

  function barChart(container, title, labels, counts) {
    const xs = labels.map((_, i) => i);
    return new uPlot({
      title, width: Math.max(300, Math.min(560, 60 + 34 * labels.length)), height: 210,
      scales: { x: { time: false, range: [-0.5, labels.length - 0.5] }, y: { range: (u, min, max) => [0, Math.max(max, 1) * 1.15] } },
      axes: [{ values: (u, ticks) => ticks.map((t) => labels[t] ?? ''), splits: () => xs, rotate: -40, size: 56, gap: 2 }, { size: 50 }],
      legend: { show: false },
      series: [{}, { label: 'count', fill: '#60a5fa', stroke: '#2563eb', paths: uPlot.paths.bars({ size: [0.7, 60] }), points: { show: false } }],
    }, [xs, counts], container);
  }

  // Aligns per-endpoint series on one time axis (an endpoint added later has fewer points).
  function align(histories) {
    const times = [...new Set(histories.flatMap((s) => s.time))].sort((a, b) => a - b);
    const index = new Map(times.map((t, i) => [t, i]));
    const columns = histories.map((s) => {
      const col = new Array(times.length).fill(null);
      s.time.forEach((t, i) => { col[index.get(t)] = s.values[i]; });
      return col;
    });
    return [times, ...columns];
  }

  // ---- overview ------------------------------------------------------------------------------
  function overviewView() {
    const instances = h('tbody');
    const endpoints = h('tbody');
    const canaries = h('div', { class: 'canaries', 'data-testid': 'canaries' });
    const shadows = h('div', { class: 'shadows', 'data-testid': 'shadows' });
    const drift = h('div', { class: 'drifts', 'data-testid': 'drift' });
    const rollouts = h('div', { class: 'rollouts', 'data-testid': 'rollouts' });
    const autos = h('tbody');
    const changes = h('tbody');
    const changesSection = h('section', { hidden: true }, h('h2', {}, 'Recent changes'),
      h('table', { class: 'grid', 'data-testid': 'recent-changes' },
        h('thead', {}, h('tr', {}, ['time', 'key', 'change', 'target', 'revision'].map((c) => h('th', {}, c)))),
        changes));
    const chartBox = h('div', { class: 'chart' });
    const noteText = h('span');
    const windowSelect = h('select', {
      id: 'window', 'aria-label': 'window',
      onchange: () => { windowSeconds = Number(windowSelect.value); sessionStorage.setItem('serval-window', windowSeconds); refresh(); },
    }, h('option', { value: '60' }, 'last minute'), h('option', { value: '300' }, 'last 5 minutes'));
    windowSelect.value = String(windowSeconds);
    const note = h('p', { class: 'muted' }, noteText, ' ', windowSelect);
    main.replaceChildren(
      h('section', {},
        h('h2', {}, 'Endpoints'),
        h('table', { class: 'grid', 'data-testid': 'endpoints' },
          h('thead', {}, h('tr', {}, ['url', 'engine', 'model', 'runs', 'state', 'req/s', 'errors', 'p50', 'p99', 'requests']
            .map((c) => h('th', {}, c)))),
          endpoints),
        note,
        chartBox),
      h('section', {}, h('h2', {}, 'Canaries'), canaries),
      h('section', {}, h('h2', {}, 'Shadows'), shadows),
      h('section', {}, h('h2', {}, 'Drift'), drift),
      h('section', {}, h('h2', {}, 'Rollouts'), rollouts),
      h('section', {}, h('h2', {}, 'Auto-update rules'),
        h('table', { class: 'grid', 'data-testid': 'auto-update' },
          h('thead', {}, h('tr', {}, ['endpoint', 'engine', 'models', 'max versions', 'serving'].map((c) => h('th', {}, c)))),
          autos)),
      h('section', {}, h('h2', {}, 'Instances'),
        h('table', { class: 'grid', 'data-testid': 'instances' },
          h('thead', {}, h('tr', {}, ['instance', 'address', 'status', 'revision', 'endpoints', 'started', 'heard from'].map((c) => h('th', {}, c)))),
          instances)),
      changesSection);
    const chart = lineChart(chartBox, 'Requests per second (last 5 minutes)', 'req/s');
    // Redrawn only when they change, so that weights being edited are left alone.
    let canaryKey = '';

    return {
      route: '#/',
      async refresh() {
        const data = await api('/api/v1/overview?window=' + windowSeconds);
        setStatus(data.server);
        setService(data.service);
        canChange = Boolean(data.server.can_change);

        endpoints.replaceChildren(...data.endpoints.map((e) => {
          const s = e.stats || {};
          const model = e.model ? h('span', {}, e.model.name || '', ' ', h('code', { class: 'muted' }, e.model.id.slice(0, 8))) : '–';
          const state = h('td', { class: 'state' }, badge(e.state),
            e.error ? h('div', { class: 'error', 'data-testid': 'error' }, e.error) : null,
            e.error && e.serving ? h('div', { class: 'muted' }, 'the previous version keeps serving') : null);
          return h('tr', { 'data-url': e.url, 'data-state': e.state },
            h('td', {}, h('a', { href: endpointHref(e.url) }, e.url), e.auto_update ? h('span', { class: 'muted' }, ' (auto-update)') : null),
            h('td', {}, e.engine),
            h('td', {}, model),
            h('td', {}, e.runs ? badge(e.runs, 'runs') : '–'),
            state,
            h('td', { class: 'n', 'data-testid': 'rate' }, fmt.num(s.requests_per_second, 2)),
            h('td', { class: 'n', 'data-testid': 'error-ratio' }, fmt.pct(s.error_ratio)),
            h('td', { class: 'n', 'data-testid': 'p50' }, fmt.ms(s.p50_ms)),
            h('td', { class: 'n', 'data-testid': 'p99' }, fmt.ms(s.p99_ms)),
            h('td', { class: 'n', 'data-testid': 'requests' }, s.requests ?? '–'));
        }));
        noteText.textContent = data.server.metrics
          ? "Rates, errors and percentiles (the server's own counters) over the"
          : 'Metrics are off on this server (serve --disable-metrics): no request numbers.';
        windowSelect.hidden = !data.server.metrics;

        const withHistory = data.endpoints.filter((e) => e.history && e.history.time.length);
        if (withHistory.length) {
          chart.set(withHistory.map((e) => e.url),
            align(withHistory.map((e) => ({ time: e.history.time, values: e.history.requests_per_second }))));
        }

        const canaryNow = JSON.stringify([data.canaries, canChange, data.service && data.service.revision]);
        if (canaryNow !== canaryKey) {
          canaryKey = canaryNow;
          canaries.replaceChildren(...(data.canaries.length ? data.canaries.map(canaryView)
            : [h('p', { class: 'muted' }, 'No canary endpoints (serval model canary).')]));
        }

        shadows.replaceChildren(...(data.shadows.length ? data.shadows.map(shadowView)
          : [h('p', { class: 'muted' }, 'No shadows (serval model shadow).')]));

        drift.replaceChildren(...(data.drift.length ? data.drift.map(driftView)
          : [h('p', { class: 'muted' }, 'No drift references (serval monitor reference).')]));

        rollouts.replaceChildren(...(data.rollouts.length ? data.rollouts.map(rolloutView)
          : [h('p', { class: 'muted' }, 'No rollouts (serval model rollout).')]));

        autos.replaceChildren(...data.auto_update.map((r) => h('tr', { 'data-endpoint': r.endpoint },
          h('td', {}, r.endpoint),
          h('td', {}, r.engine),
          h('td', {}, [r.model_name ? (r.name_regex ? 'name ~ ' : 'name = ') + r.model_name : null,
            r.project ? 'project ' + r.project : null,
            r.tags.length ? 'tags ' + r.tags.join(', ') : null,
            r.only_published ? 'published only' : null].filter(Boolean).join(' · ') || 'any model'),
          h('td', { class: 'n' }, r.max_versions),
          h('td', { 'data-testid': 'versions' }, r.versions.length ? r.versions.map((v) =>
            h('a', { class: 'chip ' + (v.state || ''), href: endpointHref(v.url), title: v.model_id }, 'v' + v.version))
            : h('span', { class: 'muted' }, 'no matching model yet')))));
        if (!data.auto_update.length) {
          autos.replaceChildren(h('tr', {}, h('td', { colspan: 5, class: 'muted' }, 'No auto-update rules (serval model auto-update).')));
        }

        instances.replaceChildren(...(data.instances || []).map((i) => h('tr', {},
          h('td', {}, h('code', {}, i.id.slice(0, 8)), i.this ? h('span', { class: 'muted' }, ' (this one)') : null),
          h('td', {}, `${i.host}:${i.port}` + (i.grpc_port ? ` · gRPC ${i.grpc_port}` : '') + ` · pid ${i.pid}`),
          h('td', {}, badge(i.status), i.failed ? h('span', { class: 'error' }, ` ${i.failed} failed`) : null),
          h('td', { class: 'n' }, i.revision),
          h('td', { class: 'n' }, i.endpoints),
          h('td', {}, fmt.time(i.started_ms)),
          h('td', {}, fmt.ago(i.heartbeat_ms)))));
        // The audit trail's tail (shown to admin keys, or to all when no key is required).
        changesSection.hidden = !data.recent_changes;
        changes.replaceChildren(...(data.recent_changes || []).slice().reverse().map((c) => h('tr', { 'data-operation': c.operation },
          h('td', {}, new Date(c.time).toLocaleString()),
          h('td', {}, h('code', {}, c.key)),
          h('td', {}, c.operation),
          h('td', {}, h('code', {}, c.target)),
          h('td', { class: 'n' }, c.revision ?? '–'))));
        if (!data.instances) {
          instances.replaceChildren(h('tr', {}, h('td', { colspan: 7, class: 'error' }, 'the control store is unreachable: instances unknown')));
        }
      },
      destroy() { chart.destroy(); },
    };
  }

  function canaryView(c) {
    const total = c.routes.reduce((a, r) => a + r.share, 0) || 1;
    const bar = h('div', { class: 'split', 'data-testid': 'split' }, ...c.routes.map((r, i) => {
      const seg = h('a', {
        class: 'segment', href: endpointHref(r.url), 'data-url': r.url, 'data-share': r.share.toFixed(4),
        title: `${r.url}: ${(100 * r.share / total).toFixed(1)} %`,
      }, `${r.url} ${(100 * r.share / total).toFixed(0)} %`);
      seg.style.flexGrow = String(r.share);
      seg.style.background = PALETTE[i % PALETTE.length];
      return seg;
    }));
    const targets = c.prefix ? `every url starting with "${c.prefix}", newest first` : c.targets.join(', ');
    return h('div', { class: 'canary', 'data-url': c.url },
      h('div', {}, h('b', {}, '/serve/' + c.url), ' → ', targets),
      c.routes.length ? bar : h('div', { class: 'error' }, 'no target of this canary is serving'),
      h('div', { class: 'muted', 'data-testid': 'weights' }, 'weights ' + c.weights.join(' / ') + ' → ' +
        c.routes.map((r) => `${r.url} ${(100 * r.share).toFixed(1)} %`).join(', ') +
        (c.sticky ? ` · sticky by ${c.sticky.replace(':', ' ')}` : '')),
      canChange ? weightsForm(c) : null);
  }

  // A shadow pair: how often the target agreed over this server's last ten minutes, both
  // latencies, agreement by minute, and the largest recent disagreements with their inputs.
  // One endpoint's drift: per feature, the reference's and the live window's share of each bin
  // side by side, and the statistics coloured by the PSI's rule of thumb.
  function driftView(d) {
    const bars = (f) => {
      const top = Math.max(0.001, ...f.reference, ...f.live);
      return h('div', { class: 'bins', 'data-testid': 'bins' }, ...f.bins.map((label, i) => {
        const bar = (value, kind) => {
          const b = h('span', { class: 'bar ' + kind, title: `${kind} ${label}: ${fmt.pct(value)}` });
          b.style.height = `${Math.round((value / top) * 48)}px`;
          return b;
        };
        return h('span', { class: 'bin', title: label }, bar(f.reference[i], 'reference'), bar(f.live[i] || 0, 'live'));
      }));
    };
    const number = (v) => (v === null || v === undefined ? '–' : v.toFixed(3));
    return h('div', { class: 'drift', 'data-endpoint': d.endpoint },
      h('div', {}, h('b', {}, d.endpoint), h('span', { class: 'muted' },
        ` · reference ${d.source} · last ${Math.round(d.window_seconds / 60)} min on this server · ${d.rows} rows`),
        d.missing.length ? h('span', { class: 'error' }, ` · the model has no feature ${d.missing.join(', ')}`) : null),
      h('table', { class: 'grid' },
        h('thead', {}, h('tr', {}, ['feature', 'reference ▮ live ▮', 'psi', 'ks / chi²', 'status'].map((c) => h('th', {}, c)))),
        h('tbody', {}, ...d.features.map((f) => h('tr', { 'data-feature': f.feature, 'data-status': f.status },
          h('td', {}, f.feature, h('span', { class: 'muted' }, ` (${f.kind})`)),
          h('td', {}, bars(f)),
          h('td', { class: 'n', 'data-testid': 'psi' }, number(f.psi)),
          h('td', { class: 'n' }, number(f.ks ?? f.chi_square)),
          h('td', {}, badge(f.status, 'drift-' + f.status)))))));
  }

  function shadowView(p) {
    const s = p.stats;
    const w = s ? s.window : null;
    const seconds = (v) => (v === null || v === undefined ? null : v * 1000);
    const minutes = s ? s.minutes.map(([at, c]) => {
      const compared = c.agreed + c.disagreed;
      const share = compared ? c.agreed / compared : null;
      const cell = h('span', {
        class: 'minute', 'data-agreement': share === null ? '' : share.toFixed(4),
        title: `${fmt.time(at)}: ${compared ? fmt.pct(share) + ' of ' + compared : 'nothing compared'}`,
      });
      cell.style.background = share === null ? '#e5e7eb' : share >= 0.99 ? '#16a34a' : share >= 0.9 ? '#f59e0b' : '#dc2626';
      return cell;
    }) : [];
    return h('div', { class: 'shadow', 'data-endpoint': p.endpoint, 'data-target': p.target },
      h('div', {}, h('b', {}, '/serve/' + p.endpoint), ' → copies to ', h('a', { href: endpointHref(p.target) }, p.target),
        h('span', { class: 'muted' }, ` · ${fmt.pct(p.fraction)} of requests · tolerance ${p.tolerance}`),
        p.active ? null : h('span', { class: 'error' }, ' · inactive: one of the two endpoints is not served')),
      h('div', { class: 'cards' },
        h('div', { class: 'card' }, h('div', { class: 'muted' }, 'agreement (10 min)'),
          h('div', { class: 'big', 'data-testid': 'agreement' }, s && s.agreement !== null ? fmt.pct(s.agreement) : '–')),
        h('div', { class: 'card' }, h('div', { class: 'muted' }, 'compared · disagreed'),
          h('div', { class: 'big', 'data-testid': 'compared' }, w ? `${w.agreed + w.disagreed} · ${w.disagreed}` : '–')),
        h('div', { class: 'card' }, h('div', { class: 'muted' }, 'target errors · dropped'),
          h('div', { class: 'big' }, w ? `${w.errors} · ${w.dropped}` : '–')),
        h('div', { class: 'card' }, h('div', { class: 'muted' }, 'p50 / p99: endpoint vs target'),
          h('div', { 'data-testid': 'latency' }, s ? `${fmt.ms(seconds(s.primary_p50))} / ${fmt.ms(seconds(s.primary_p99))}` : '–',
            h('br'), s ? `${fmt.ms(seconds(s.shadow_p50))} / ${fmt.ms(seconds(s.shadow_p99))}` : '–'))),
      minutes.length ? h('div', { class: 'minutes', 'data-testid': 'minutes' }, ...minutes) : null,
      s && s.worst.length ? h('table', { class: 'grid', 'data-testid': 'disagreements' },
        h('thead', {}, h('tr', {}, ['time', 'difference', 'where', 'request', 'endpoint answered', 'target answered'].map((c) => h('th', {}, c)))),
        h('tbody', {}, ...s.worst.map((d) => h('tr', {},
          h('td', {}, fmt.time(d.time_ms)),
          h('td', { class: 'n' }, Number.isFinite(d.difference) ? d.difference.toPrecision(3) : '∞'),
          h('td', {}, d.detail),
          h('td', {}, h('code', {}, d.input)),
          h('td', {}, h('code', {}, d.primary)),
          h('td', {}, h('code', {}, d.shadow))))))
        : null);
  }

  // A rollout: its steps (the current one marked), the weights now, and every event.
  function rolloutView(r) {
    const steps = r.steps.map((pct, i) => h('span', {
      class: 'chip step' + (i + 1 === r.step ? ' current' : i + 1 < r.step ? ' done' : ''),
      'data-step': String(i + 1),
    }, `${pct} %`));
    return h('div', { class: 'rollout', 'data-canary': r.canary, 'data-state': r.state },
      h('div', {}, h('b', {}, '/serve/' + r.canary), ` · ${r.from} → ${r.to} · `, badge(r.state),
        h('span', { class: 'muted' }, ` · every ${Math.round(r.interval_ms / 1000)} s`)),
      h('div', { 'data-testid': 'steps' }, h('span', { class: 'muted' }, 'steps '), ...steps,
        h('span', { class: 'muted' }, ` · weights now ${r.from} ${r.weights[0]} / ${r.to} ${r.weights[1]}`)),
      h('table', { class: 'grid', 'data-testid': 'events' },
        h('thead', {}, h('tr', {}, ['time', 'event', 'detail'].map((c) => h('th', {}, c)))),
        h('tbody', {}, ...r.events.slice().reverse().map((e) => h('tr', { 'data-kind': e.kind },
          h('td', {}, fmt.time(e.time_ms)), h('td', {}, e.kind), h('td', {}, e.detail))))),
      canChange ? rolloutActions(r) : null);
  }

  // Pause, resume or abort a rollout (admin keys), each after a confirmation: what the server
  // accepts in the rollout's state (shadow and running pause; paused resumes; not ended aborts).
  function rolloutActions(r) {
    const active = r.state === 'shadow' || r.state === 'running';
    const ended = ['promoted', 'rolled_back', 'aborted'].includes(r.state);
    const button = (action, question) => h('button', {
      type: 'button', 'data-testid': 'rollout-' + action,
      onclick: () => act(question, 'POST', servicePath('rollouts', r.canary, action)),
    }, action[0].toUpperCase() + action.slice(1));
    const buttons = [
      active ? button('pause', `Pause the rollout of /serve/${r.canary}? The weights stay as they are now.`) : null,
      r.state === 'paused' ? button('resume', `Resume the rollout of /serve/${r.canary}? The current step is measured afresh.`) : null,
      ended ? null : button('abort', `Abort the rollout of /serve/${r.canary}? ${r.from} gets all the traffic again.`),
    ].filter(Boolean);
    return buttons.length ? h('div', { class: 'actions', 'data-testid': 'rollout-actions' }, ...buttons) : null;
  }

  // New weights for a canary (admin keys): one number per weight, saved after a confirmation.
  function weightsForm(c) {
    const inputs = c.weights.map((w, i) => h('input', {
      type: 'number', min: '0', step: 'any', value: String(w), size: 6, 'data-testid': 'weight-input',
      'aria-label': 'weight of ' + (c.prefix ? 'version ' + (i + 1) + ' under ' + c.prefix : c.targets[i]),
    }));
    return h('form', {
      class: 'weights', 'data-testid': 'weights-form',
      onsubmit: (e) => {
        e.preventDefault();
        const weights = inputs.map((i) => Number(i.value));
        const target = c.prefix ? { input_endpoint_prefix: c.prefix } : { input_endpoints: c.targets };
        act(`Set the weights of canary /serve/${c.url} to ${weights.join(' / ')}?`,
          'PUT', servicePath('canaries', c.url), { weights, ...target, sticky: c.sticky || null });
      },
    }, 'new weights ', ...inputs, ' ', h('button', { type: 'submit', 'data-testid': 'save-weights' }, 'Save weights'));
  }

  // ---- endpoint page -------------------------------------------------------------------------
  function endpointView(url) {
    const title = h('h2', {}, url);
    const info = h('dl', { class: 'info', 'data-testid': 'info' });
    const cards = h('div', { class: 'cards' });
    const cardsNote = h('p', { class: 'muted' });
    const charts = h('div', { class: 'charts' });
    const latencyBox = h('div', { class: 'chart' });
    const trafficBox = h('div', { class: 'chart' });
    charts.append(latencyBox, trafficBox);
    const metadata = h('div', { 'data-testid': 'metadata' });
    const rule = h('div', { 'data-testid': 'metric-rule' });
    const variables = h('div', { class: 'variables', 'data-testid': 'variables' });
    const errors = h('tbody');
    // "try it": built once, so a refresh never touches what the user typed.
    const path = h('input', { id: 'try-path', value: '/serve/' + url, size: 40 });
    const body = h('textarea', { id: 'try-body', rows: 8, spellcheck: 'false' });
    const exampleNote = h('div', { class: 'muted' });
    const result = h('div', { id: 'try-result', 'data-testid': 'try-result' });
    const send = h('button', { id: 'try-send', type: 'submit' }, 'Send');
    // Tree models explain their predictions: ?explain=true adds "contributions" to the reply.
    const explain = h('input', { id: 'try-explain', type: 'checkbox' });
    const why = h('div', { class: 'why', 'data-testid': 'why' });
    let features = null;
    const form = h('form', {
      class: 'try',
      onsubmit: async (e) => {
        e.preventDefault();
        why.replaceChildren();
        const reply = await tryIt(path.value + (explain.checked ? '?explain=true' : ''), body.value, result);
        if (reply && reply.contributions) why.replaceChildren(...explanation(reply, features));
      },
    }, h('label', {}, 'POST ', path), exampleNote, body,
      h('div', {}, send, ' ', h('label', {}, explain, ' explain the prediction')), result, why);
    let prefilled = false;
    // Changes (admin keys): shown when the page may make them.
    let modelId = null;
    const removeButton = h('button', {
      type: 'button', 'data-testid': 'remove-endpoint',
      onclick: async () => {
        if (await act(`Remove the endpoint /serve/${url}? Requests to it will get 404.`, 'DELETE', servicePath('endpoints', url))) {
          location.hash = '#/';
        }
      },
    }, 'Remove endpoint');
    const publishButton = h('button', {
      type: 'button', 'data-testid': 'publish-model',
      onclick: () => act(`Publish model ${modelId}? Auto-update rules that take published models only will serve it.`,
        'POST', '/api/v1/models/' + encodeURIComponent(modelId) + '/publish'),
    }, 'Publish model');
    const actions = h('section', { 'data-testid': 'actions', hidden: true }, h('h3', {}, 'Change'), removeButton, ' ', publishButton);

    main.replaceChildren(
      h('p', {}, h('a', { href: '#/' }, '← all endpoints')),
      title, info, actions, cards, cardsNote, charts,
      h('section', {}, h('h3', {}, 'Try it'), form),
      h('section', {}, h('h3', {}, 'Model metadata'), metadata),
      h('section', {}, h('h3', {}, 'Metric rule and live variables'), rule, variables),
      h('section', {}, h('h3', {}, 'Recent errors'),
        h('table', { class: 'grid', 'data-testid': 'recent-errors' },
          h('thead', {}, h('tr', {}, ['time', 'protocol', 'kind', 'message'].map((c) => h('th', {}, c)))), errors)));
    const latency = lineChart(latencyBox, 'Latency (ms)', 'ms');
    const traffic = lineChart(trafficBox, 'Requests and errors per second', 'per s');
    let varCharts = [];
    let varKey = '';

    return {
      route: '#/endpoint/' + url,
      async refresh() {
        const data = await api('/api/v1/endpoints/' + url.split('/').map(encodeURIComponent).join('/') + '?window=' + windowSeconds);
        setStatus(data.server);
        setService(data.service);
        canChange = Boolean(data.server.can_change);
        const e = data.endpoint;
        modelId = e.model ? e.model.id : null;
        // A version an auto-update rule serves belongs to the rule: it is not removed alone.
        removeButton.hidden = Boolean(e.auto_update);
        publishButton.hidden = !(e.model && e.model.published === false);
        actions.hidden = !canChange || (removeButton.hidden && publishButton.hidden);
        title.replaceChildren('/serve/' + e.url, ' ', badge(e.state));
        const model = e.model ? `${e.model.name || '(name unknown)'} · id ${e.model.id}` + (e.model.project ? ` · project ${e.model.project}` : '') : '–';
        const rows = [
          ['engine', e.engine], ['model', model], ['version', e.version || '–'],
          ['runs', e.path || '–'],
          e.python ? ['python workers', `${e.python.alive} of ${e.python.workers} alive, ${e.python.restarts} restarts` + (e.python.last_exit ? ` (last exit: ${e.python.last_exit})` : '')] : null,
          e.auto_update ? ['auto-update', 'served by the rule of ' + e.auto_update] : null,
          data.configured && data.configured.preprocess ? ['preprocess', data.configured.preprocess] : null,
        ].filter(Boolean);
        info.replaceChildren(...rows.flatMap(([k, v]) => [h('dt', {}, k), h('dd', {}, v)]),
          e.error ? h('div', { class: 'error', 'data-testid': 'error' }, e.error) : '');
        const s = e.stats || {};
        cards.replaceChildren(
          card('req/s', fmt.num(s.requests_per_second, 2)), card('errors', fmt.pct(s.error_ratio)),
          card('p50', fmt.ms(s.p50_ms)), card('p99', fmt.ms(s.p99_ms)),
          card('requests', s.requests ?? '–'), card('failed', s.errors ?? '–'));
        cardsNote.textContent = data.server.metrics
          ? `Rate, errors and percentiles over the last ${Math.round(s.window_seconds ?? data.server.window_seconds)} s; requests and failed since the server started.`
          : 'Metrics are off on this server (serve --disable-metrics): no request numbers.';
        const sr = data.series;
        if (sr.time.length) {
          latency.set(['p50', 'p99'], [sr.time, sr.p50_ms, sr.p99_ms]);
          traffic.set(['requests/s', 'errors/s'], [sr.time, sr.requests_per_second, sr.errors_per_second]);
        }
        if (!prefilled) {
          prefilled = true;
          exampleNote.textContent = data.example.note;
          body.value = data.example.body ? pretty(data.example.body) : '{}';
        }
        features = data.metadata ? data.metadata.feature_names : null;
        metadata.replaceChildren(...(data.metadata ? [
          h('p', { class: 'muted' }, 'platform ' + data.metadata.platform),
          tensorTable('inputs', data.metadata.inputs), tensorTable('outputs', data.metadata.outputs),
        ] : [h('p', { class: 'muted' }, 'not serving: no metadata')]));
        rule.replaceChildren(data.metric_rule
          ? h('p', {}, `rule "${data.metric_rule.endpoint}", log frequency ${data.metric_rule.log_frequency ?? 'service default'}: ` +
            data.metric_rule.variables.map((v) => `${v.name} (${v.type})`).join(', '))
          : h('p', { class: 'muted' }, 'No metric rule covers this endpoint (serval metrics add).'));
        updateVariables(data.variables);
        errors.replaceChildren(...(data.recent_errors.length ? data.recent_errors.map((r) => h('tr', {},
          h('td', {}, fmt.time(r.time_ms)), h('td', {}, r.protocol), h('td', {}, r.kind), h('td', { class: 'error' }, r.message)))
          : [h('tr', {}, h('td', { colspan: 4, class: 'muted' }, 'none since the server started'))]));
      },
      destroy() { latency.destroy(); traffic.destroy(); varCharts.forEach((c) => c.destroy()); },
    };

    function updateVariables(list) {
      const keyNow = JSON.stringify(list);
      if (keyNow === varKey) return;
      varKey = keyNow;
      varCharts.forEach((c) => c.destroy());
      varCharts = [];
      variables.replaceChildren();
      for (const v of list) {
        const box = h('div', { class: 'variable', 'data-variable': v.name });
        variables.append(box);
        if (v.type === 'scalar' || v.type === 'enum') {
          const pairs = v.type === 'scalar' ? v.buckets : v.values;
          const labels = pairs.map(([b]) => (v.type === 'scalar' ? '≤' + b : b));
          const summary = v.type === 'scalar' ? ` · ${v.count} observations` : '';
          varCharts.push(barChart(box, `${v.name}${summary}`, labels, pairs.map(([, n]) => n)));
        } else {
          box.append(h('div', { class: 'card' }, h('div', { class: 'muted' }, `${v.name} (${v.type})`), h('div', { class: 'big' }, fmt.num(v.value, 3))));
        }
      }
      if (!list.length) variables.append(h('p', { class: 'muted' }, 'No live variables.'));
    }
  }

  function card(label, value) {
    return h('div', { class: 'card', 'data-card': label }, h('div', { class: 'muted' }, label), h('div', { class: 'big' }, value));
  }

  function tensorTable(what, tensors) {
    return h('table', { class: 'grid' },
      h('thead', {}, h('tr', {}, h('th', {}, what), h('th', {}, 'datatype'), h('th', {}, 'shape'))),
      h('tbody', {}, ...tensors.map((t) => h('tr', {}, h('td', {}, t.name), h('td', {}, t.datatype), h('td', {}, '[' + t.shape.join(', ') + ']')))));
  }

  async function tryIt(path, text, result) {
    let parsed;
    try { parsed = JSON.parse(text); } catch (err) {
      result.replaceChildren(h('div', { class: 'error' }, 'not JSON: ' + err.message));
      return;
    }
    result.replaceChildren(h('div', { class: 'muted' }, 'sending…'));
    const headers = { 'Content-Type': 'application/json' };
    if (key) headers.Authorization = 'Bearer ' + key;
    const start = performance.now();
    try {
      const response = await fetch(path, { method: 'POST', headers, body: JSON.stringify(parsed) });
      const reply = await response.text();
      const took = performance.now() - start;
      let shown = reply;
      try { shown = JSON.stringify(JSON.parse(reply), null, 2); } catch (_) { /* not JSON: as sent */ }
      result.replaceChildren(
        h('div', {}, badge(String(response.status), response.ok ? 'loaded' : 'failed'),
          ' in ', h('b', { 'data-testid': 'latency' }, took.toFixed(1) + ' ms')),
        h('pre', { 'data-testid': 'reply', 'data-status': response.status }, shown));
      try { return JSON.parse(reply); } catch (_) { return null; }
    } catch (err) {
      result.replaceChildren(h('div', { class: 'error' }, 'request failed: ' + err.message));
      return null;
    }
  }

  // The first row's contributions as bars, largest first: for a classifier, those of the class
  // it predicted. XGBoost nests classes ([rows][classes][features + 1]); LightGBM puts them side
  // by side ([rows][classes × (features + 1)]); the bias is last in each.
  function explanation(reply, names) {
    const row = reply.contributions[0];
    let values = row;
    let cls = null;
    if (reply.probabilities && reply.probabilities[0].length > 2) {
      const p = reply.probabilities[0];
      cls = p.indexOf(Math.max(...p));
      values = Array.isArray(row[0]) ? row[cls] : row.slice(cls * (row.length / p.length), (cls + 1) * (row.length / p.length));
    } else if (Array.isArray(row[0])) {
      values = row[0];
    }
    const bias = values[values.length - 1];
    const items = values.slice(0, -1).map((v, i) => ({ name: names && names[i] ? names[i] : 'feature ' + i, v }))
      .sort((a, b) => Math.abs(b.v) - Math.abs(a.v));
    const largest = Math.max(...items.map((it) => Math.abs(it.v)), 1e-12);
    return [
      h('h4', {}, 'Why: contributions to the first row\'s ' + (cls === null ? 'margin' : 'margin for class ' + cls) + ' (TreeSHAP)'),
      h('div', { class: 'bars', 'data-testid': 'contributions' }, ...items.map((it) => {
        const bar = h('span', { class: 'bar ' + (it.v >= 0 ? 'up' : 'down') });
        bar.style.width = (50 * Math.abs(it.v) / largest).toFixed(1) + '%';
        return h('div', { class: 'contribution', 'data-feature': it.name, 'data-value': String(it.v) },
          h('span', { class: 'name' }, it.name), h('span', { class: 'track' }, bar), h('span', { class: 'n' }, fmt.num(it.v, 4)));
      })),
      h('p', { class: 'muted' }, 'bias (expected margin) ' + fmt.num(bias, 4) + '; the bias and the contributions sum to the margin.'),
    ];
  }

  // ---- routing and refresh -------------------------------------------------------------------
  function routeView() {
    const hash = location.hash || '#/';
    const match = hash.match(/^#\/endpoint\/(.+)$/);
    if (match) {
      const url = match[1].split('/').map(decodeURIComponent).join('/');
      return view && view.route === '#/endpoint/' + url ? view : endpointView(url);
    }
    return view && view.route === '#/' ? view : overviewView();
  }

  async function refresh() {
    if (loading) return;
    loading = true;
    try {
      const next = routeView();
      if (next !== view) {
        if (view) view.destroy();
        view = next;
      }
      await view.refresh();
      document.body.dataset.loaded = 'true';
    } catch (err) {
      if (err.message !== 'unauthorized') setStatus(null, err.message);
    } finally {
      loading = false;
    }
  }

  window.addEventListener('hashchange', refresh);
  refresh();
  timer = setInterval(refresh, REFRESH_MS);
  window.servalConsole = { refresh, stop() { clearInterval(timer); } };
})();
