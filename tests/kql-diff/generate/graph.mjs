// Graph queries: make-graph over Edges (and Nodes), or graph('…') of the tenant's database,
// then graph-match / graph-shortest-paths with the graph functions (all, any, map,
// inner_nodes, node_id, node_degree_in/out, labels), graph-to-table, graph-mark-components.

import { literal, str } from './literals.mjs';

const NODE = ['a', 'b', 'c'];

function nodeCond(ctx, v) {
  const { rng } = ctx;
  return rng.weighted([
    [4, () => `${v}.Name ${rng.pick(['==', '!=', 'has', 'startswith'])} ${literal(rng, 'string')}`],
    [3, () => `${v}.Kind == ${str(rng, rng.pick(['user', 'host', 'app']), { joined: false })}`],
    [2, () => { ctx.used.add('node_degree_in'); return `node_degree_in(${v}) > ${rng.int(0, 5)}`; }],
    [2, () => { ctx.used.add('node_degree_out'); return `node_degree_out(${v}) >= ${rng.int(1, 5)}`; }],
    [2, () => { ctx.used.add('labels'); return `labels(${v}) has ${str(rng, rng.pick(['user', 'host']), { joined: false })}`; }],
    [1, () => { ctx.used.add('node_id'); return `isnotempty(node_id(${v}))`; }],
  ]);
}

function edgeCond(ctx, e) {
  const { rng } = ctx;
  const fn = rng.pick(['all', 'any']);
  ctx.used.add(fn);
  return rng.weighted([
    [3, () => `${fn}(${e}, Weight ${rng.pick(['>', '<', '>='])} ${rng.int(0, 9)}.${rng.int(0, 9)})`],
    [2, () => `${fn}(${e}, Relation == ${str(rng, rng.pick(['owns', 'calls', 'member']), { joined: false })})`],
    [1, () => { ctx.used.add('inner_nodes'); return `${fn}(inner_nodes(${e}), Kind != ${str(rng, 'app', { joined: false })})`; }],
  ]);
}

function projection(ctx, e) {
  const { rng } = ctx;
  const items = [
    () => `${rng.pick(NODE.slice(0, 2))}.Name`,
    () => `${rng.pick(['From', 'Src'])} = a.Name`,
    () => { ctx.used.add('map'); return `Weights = map(${e}, Weight)`; },
    () => { ctx.used.add('map'); ctx.used.add('inner_nodes'); return `Via = map(inner_nodes(${e}), Name)`; },
    () => { ctx.used.add('node_id'); return `Id = node_id(b)`; },
    () => { ctx.used.add('labels'); return `Labels = labels(a)`; },
    () => { ctx.used.add('node_degree_out'); return `Out = node_degree_out(a)`; },
    () => `Hops = array_length(${e})`,
  ];
  return rng.sample(items, rng.int(1, 3)).map((f) => f()).join(', ');
}

/** A graph query; {text, shape}. */
export function graphQuery(ctx) {
  const { rng } = ctx;
  const p = ctx.pipe;
  const source = rng.weighted([
    [7, () => `Edges${rng.chance(0.4) ? `${p}where Weight > ${rng.int(0, 5)}` : ''}${p}make-graph Source ${rng.pick(['-->', '--'])} Destination${rng.weighted([
      [5, ' with Nodes on Id'], [2, ' with_node_id=Id'], [1, ` with (Nodes${p}where Kind != 'app') on Id`], [2, '']])}`],
    [2, () => { ctx.used.add('graph'); return `graph(${str(rng, rng.pick(['Social', 'Network']), { joined: false })}${rng.chance(0.3) ? `, ${rng.pick(['true', 'false', "'latest'"])}` : ''})`; }],
  ]);
  const e = 'e';
  const hops = rng.pick(['', '*1..3', '*2..2', '*1..5']);
  const arrow = rng.pick(['->', '-']);
  const pattern = rng.chance(0.4)
    ? `(a)-[${e}${hops}]${arrow}(b)<-[f]-(c)`
    : `(a)-[${e}${hops}]${arrow}(b)`;
  const conds = [];
  if (rng.chance(0.8)) conds.push(nodeCond(ctx, rng.pick(['a', 'b'])));
  if (rng.chance(0.6)) conds.push(edgeCond(ctx, e));
  if (rng.chance(0.3)) conds.push(nodeCond(ctx, 'b'));
  const where = conds.length ? ` where ${conds.join(rng.pick([' and ', ' or ']))}` : '';
  const op = rng.weighted([
    [6, () => `graph-match${rng.chance(0.2) ? ` cycles=${rng.pick(['none', 'unique_edges', 'all'])}` : ''} ${pattern}${where} project ${projection(ctx, e)}`],
    [2, () => `graph-shortest-paths (a)-[${e}*1..${rng.int(2, 6)}]->(b)${where} project a.Name, b.Name, Hops = array_length(${e})`],
    [2, () => rng.chance(0.5) ? `graph-to-table nodes${rng.chance(0.4) ? ` with_node_id=${rng.pick(['NodeId', 'Nid'])}` : ''}`
      : `graph-to-table edges${rng.chance(0.4) ? ' with_source_id=S with_target_id=T' : ''}`],
    [1, () => `graph-mark-components${p}graph-to-table nodes`],
  ]);
  return { text: `${source}${p}${op}`, shape: [{ name: 'Name', type: 'string' }] };
}
