// Literals of every form Kusto.Language lexes, by type. A string value is rendered in one of
// the quoting forms ('x', "x", @'x', h'x', ```x```, joined literals …) with the escapes the
// form needs; values come from small vocabularies, chosen by what a parameter is for.

const WORDS = ['TEXAS', 'KANSAS', 'Hail', 'Flood', 'Tornado', 'error', 'warning', 'timeout', 'login',
  'checkout', 'alpha', 'beta', 'contoso', 'north', 'admin', 'svc-web', 'GET /api', 'ok', 'x', 'A-1'];
const HINTS = {
  regex: ['\\d+', '[a-z]+', '^\\w+$', '(\\d+)\\.(\\d+)', 'user=(\\S+)', '[0-9a-f]{8}', '\\s+', '^(ERROR|WARN)'],
  format: ['yyyy-MM-dd', 'HH:mm:ss', 'yyyy-MM-dd HH:mm', 'dd/MM/yy', 'hh:mm:ss.fff'],
  tsformat: ['d.hh:mm:ss', 'hh:mm', 'mm:ss.fff'],
  timezone: ['Europe/Berlin', 'UTC', 'America/New_York', 'Asia/Tokyo'],
  ip: ['10.0.0.1', '192.168.1.20', '172.16.0.5', '8.8.8.8', '127.0.0.1'],
  range: ['10.0.0.0/8', '192.168.0.0/16', '172.16.0.0/12'],
  ipv6: ['fe80::1', '2001:db8::1', '::1'],
  url: ['https://contoso.example/a/b?x=1', 'http://localhost:8080/p?q=2#f', 'https://www.example.org/index.html'],
  path: ['C:\\Windows\\System32\\cmd.exe', '/var/log/syslog', 'D:\\data\\file.txt'],
  json: ['{"a": 1}', '[1, 2, 3]', '{"k": "v", "n": [1, 2]}'],
  jsonpath: ['$.a', '$.k', "$['n'][0]", '$.x.y'],
  version: ['1.2.3', '10.0.19041.1', '2.0'],
  geohash: ['u33dc', 'dr5ru', '9q8yy'],
  s2cell: ['47b1', '89c25', '1234567'],
  h3cell: ['861f8894fffffff', '8a1f05a3ffffff', '85283473fffffff'],
  csv: ['a,b,c', '1,"x y",3'],
  agent: ['Mozilla/5.0 (Windows NT 10.0; Win64; x64)', 'curl/8.1.2'],
  wkt: ['POINT(1 2)', 'LINESTRING(0 0, 1 1)', 'POLYGON((0 0, 1 0, 1 1, 0 0))'],
  base64: ['aGVsbG8=', 'S3VzdG8=', 'AAEC'],
  encoding: ['utf8', 'utf-8'],
  parser: ['windows'],
  trend: ['linear', 'avg', 'none'],
  kind: ['normal', 'regex'],
  method: ['ctukey', 'tukey'],
  delimiter: [',', ';', '|', ' '],
  cursor: ["''", '636040929866477946'],
};
const PARAM_HINTS = [
  [/regex|pattern|lookup_regex/i, 'regex'], [/^format$/i, 'format'], [/timezone/i, 'timezone'],
  [/ip_range|range|prefix(es)?$/i, 'range'], [/^ip|ip\d|ips$/i, 'ip'], [/url/i, 'url'],
  [/path$/i, 'path'], [/json/i, 'json'], [/version/i, 'version'], [/geohash/i, 'geohash'],
  [/s2cell/i, 's2cell'], [/h3cell/i, 'h3cell'], [/csv/i, 'csv'], [/user_agent/i, 'agent'],
  [/wkt/i, 'wkt'], [/base64/i, 'base64'], [/trend/i, 'trend'], [/^method$/i, 'method'],
  [/delimiter/i, 'delimiter'], [/^parser$/i, 'parser'], [/^kind$/i, 'kind'],
];

/** A vocabulary for a parameter name (format, regex, ip …), or null. */
export function hintFor(paramName) {
  for (const [re, key] of PARAM_HINTS) if (re.test(paramName ?? '')) return key;
  return null;
}

/** A string value: from the hint's vocabulary when there is one. */
export function stringValue(rng, hint) {
  return rng.pick(HINTS[hint] ?? WORDS);
}

const escapeRegular = (v, q) => v.replace(/\\/g, '\\\\').replace(q === "'" ? /'/g : /"/g, `\\${q}`);

/** A string literal for `value` in a random form; joined forms split it in two. */
export function str(rng, value, { joined = true, multiline = true } = {}) {
  const forms = [
    [30, () => `'${escapeRegular(value, "'")}'`],
    [25, () => `"${escapeRegular(value, '"')}"`],
    [8, () => `@'${value.replace(/'/g, "''")}'`],
    [6, () => `@"${value.replace(/"/g, '""')}"`],
    [5, () => `${rng.pick(['h', 'H'])}'${escapeRegular(value, "'")}'`],
    [3, () => `${rng.pick(['h', 'H'])}"${escapeRegular(value, '"')}"`],
    [2, () => `h@'${value.replace(/'/g, "''")}'`],
  ];
  if (multiline && !value.includes('`') && !value.includes('~')) {
    forms.push([3, () => '```' + value + '```'], [1, () => '~~~' + value + '~~~']);
  }
  if (joined && value.length >= 2) {
    forms.push([4, () => {
      const cut = rng.int(1, value.length - 1);
      return `${str(rng, value.slice(0, cut), { joined: false, multiline: false })} ${str(rng, value.slice(cut), { joined: false, multiline: false })}`;
    }]);
  }
  return rng.weighted(forms);
}

const pad = (n) => String(n).padStart(2, '0');

export function dateText(rng) {
  return `${rng.int(2019, 2025)}-${pad(rng.int(1, 12))}-${pad(rng.int(1, 28))}`;
}

export function datetimeLit(rng) {
  const d = dateText(rng);
  const t = `${pad(rng.int(0, 23))}:${pad(rng.int(0, 59))}:${pad(rng.int(0, 59))}`;
  return rng.weighted([
    [30, `datetime(${d})`], [15, `datetime("${d}")`], [15, `datetime('${d}T${t}Z')`],
    [8, `datetime(${d} ${t.slice(0, 5)})`], [6, `datetime(${d}T${t}.${rng.int(100, 999)}Z)`],
    [5, `date(${d})`], [2, 'datetime(null)'],
  ]);
}

export function timespanLit(rng) {
  const n = rng.int(1, 90);
  return rng.weighted([
    [20, `${n}d`], [20, `${n}m`], [15, `${n}h`], [8, `${rng.int(1, 9)}.5h`], [10, `${n}s`],
    [6, `${n * 10}ms`], [3, `${n}tick`], [3, `${n}microsecond`], [4, `${rng.int(1, 5)}days`],
    [3, `${n}minutes`], [3, `${rng.int(1, 12)}hours`], [4, `time(${rng.int(0, 3)}.${pad(rng.int(0, 23))}:${pad(rng.int(0, 59))}:00)`],
    [3, `timespan(${n}m)`], [2, `time(00:${pad(rng.int(0, 59))}:00)`], [1, 'time(null)'],
  ]);
}

export function guidLit(rng) {
  const hex = (k) => Array.from({ length: k }, () => '0123456789abcdef'[rng.int(0, 15)]).join('');
  return `guid(${hex(8)}-${hex(4)}-${hex(4)}-${hex(4)}-${hex(12)})`;
}

export function intLit(rng) {
  return rng.weighted([[50, `${rng.int(0, 100)}`], [15, `int(${rng.int(-5, 50)})`], [5, 'int(null)']]);
}

export function longLit(rng) {
  return rng.weighted([
    [50, `${rng.int(0, 1000)}`], [12, `0x${rng.int(1, 255).toString(16).toUpperCase()}`],
    [3, `0x${rng.int(1, 4095).toString(16)}`], [12, `long(${rng.int(-10, 500)})`], [3, 'long(null)'],
    [5, `${rng.int(1, 9)}000000`],
  ]);
}

export function realLit(rng) {
  return rng.weighted([
    [40, `${rng.int(0, 99)}.${rng.int(0, 99)}`], [10, `${rng.int(1, 9)}e${rng.int(-3, 4)}`],
    [10, `real(${rng.int(0, 9)}.${rng.int(1, 9)})`], [8, `double(${rng.int(0, 50)})`],
    [2, rng.pick(['real(nan)', 'real(+inf)', 'real(-inf)', 'real(null)'])], [5, `${rng.int(0, 99)}.0`],
  ]);
}

export function decimalLit(rng) {
  return `decimal(${rng.int(-5, 999)}.${rng.int(0, 99)})`;
}

export function boolLit(rng) {
  return rng.weighted([[40, 'true'], [40, 'false'], [6, 'bool(true)'], [4, 'bool(false)'], [3, 'True'], [3, 'FALSE'], [2, 'bool(null)']]);
}

function dynElement(rng, depth) {
  return rng.weighted([
    [30, () => `${rng.int(0, 99)}`],
    [25, () => { const q = rng.pick(['"', "'"]); return `${q}${stringValue(rng)}${q}`; }],
    [8, () => `${rng.int(0, 9)}.${rng.int(0, 9)}`],
    [6, () => rng.pick(['true', 'false', 'null'])],
    [depth < 2 ? 6 : 0, () => dynArray(rng, depth + 1)],
    [depth < 2 ? 5 : 0, () => dynBag(rng, depth + 1)],
  ]);
}

function dynArray(rng, depth) {
  const n = rng.int(0, 4);
  return `[${Array.from({ length: n }, () => dynElement(rng, depth)).join(', ')}]`;
}

function dynBag(rng, depth) {
  const keys = rng.sample(['a', 'b', 'k', 'name', 'n', 'level', 'x', 'y', 'tags'], rng.int(0, 3));
  const quote = (k) => (rng.chance(0.7) ? `"${k}"` : `'${k}'`);
  return `{${keys.map((k) => `${quote(k)}: ${dynElement(rng, depth)}`).join(', ')}}`;
}

/** dynamic([…]), dynamic({…}) and scalar dynamics; `shape` is 'array', 'bag' or undefined. */
export function dynamicLit(rng, shape) {
  if (shape === 'array') return `dynamic(${dynArray(rng, 0)})`;
  if (shape === 'bag') return `dynamic(${dynBag(rng, 0)})`;
  return rng.weighted([
    [40, () => `dynamic(${dynArray(rng, 0)})`], [35, () => `dynamic(${dynBag(rng, 0)})`],
    [5, 'dynamic(null)'], [5, () => `dynamic(${rng.int(0, 9)})`], [5, () => `dynamic(${str(rng, stringValue(rng), { joined: false, multiline: false })})`],
  ]);
}

export function typeofLit(rng, type) {
  return `typeof(${type ?? rng.pick(['string', 'long', 'int', 'real', 'datetime', 'timespan', 'bool', 'dynamic', 'guid', 'decimal'])})`;
}

/** A literal of a scalar type. */
export function literal(rng, type, hint) {
  switch (type) {
    case 'string': return str(rng, stringValue(rng, hint));
    case 'int': return intLit(rng);
    case 'long': return longLit(rng);
    case 'real': return realLit(rng);
    case 'decimal': return decimalLit(rng);
    case 'bool': return boolLit(rng);
    case 'datetime': return datetimeLit(rng);
    case 'timespan': return timespanLit(rng);
    case 'guid': return guidLit(rng);
    case 'dynamic': return dynamicLit(rng);
    case 'array': return dynamicLit(rng, 'array');
    case 'bag': return dynamicLit(rng, 'bag');
    case 'type': return typeofLit(rng);
    default: return literal(rng, rng.pick(['string', 'long', 'real', 'bool']), hint);
  }
}
