// Preloaded (--require) into a child of spec/exits.spec.ts, and so into its delivery worker (a worker
// inherits execArgv). In the worker only, it holds the thread where Node or node-sqlite3 abort the
// process if the thread is torn down: while a module loads, and in native code right after a
// statement's callback returned. It leaves marker files in WV_SLOW.dir so the child can exit at
// that very moment. Settings in WV_SLOW as JSON: { dir, load?: module name, callback?: true, ms }.
'use strict';
const { isMainThread } = require('node:worker_threads');
const fs = require('node:fs');
const path = require('node:path');
const Module = require('node:module');

const cfg = JSON.parse(process.env.WV_SLOW);
const mark = (name) => fs.writeFileSync(path.join(cfg.dir, name), '');
// A busy wait: the thread stays in this frame, as it stays in native code.
const hold = () => {
  for (const until = Date.now() + cfg.ms; Date.now() < until; );
};

if (!isMainThread) {
  const load = Module._load;
  let patched = false;
  Module._load = function (request, ...rest) {
    const slow = request === cfg.load && !fs.existsSync(path.join(cfg.dir, 'load-end'));
    if (slow) {
      mark('load-start');
      hold();
    }
    const loaded = load.call(this, request, ...rest);
    if (slow) mark('load-end');
    if (request === 'sqlite3' && cfg.callback && !patched) {
      patched = true;
      patchCallbacks(loaded);
    }
    return loaded;
  };
}

/** The first statement callback after the child wrote `arm` is held after it returned. */
function patchCallbacks(sqlite3) {
  let fired = false;
  const wrap = (cb) =>
    function (...args) {
      const out = cb.apply(this, args);
      if (!fired && fs.existsSync(path.join(cfg.dir, 'arm'))) {
        fired = true;
        mark('in-callback');
        hold();
        mark('callback-end');
      }
      return out;
    };
  for (const [proto, name] of [[sqlite3.Statement.prototype, 'run'], [sqlite3.Statement.prototype, 'all'], [sqlite3.Database.prototype, 'exec']]) {
    const orig = proto[name];
    proto[name] = function (...args) {
      const i = args.length - 1;
      if (typeof args[i] === 'function') args[i] = wrap(args[i]);
      return orig.apply(this, args);
    };
  }
}
