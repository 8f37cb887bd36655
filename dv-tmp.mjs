import Database from 'better-sqlite3';
const path = process.argv[2];
const w = new Database(path); w.pragma('journal_mode=WAL'); w.pragma('synchronous=NORMAL');
const r = new Database(path, {fileMustExist:true}); r.pragma('query_only=ON');
const st = r.prepare('PRAGMA data_version').pluck();
for (let k = 0; k < 3; k++) { const n = 100000; const t = process.hrtime.bigint(); for (let i = 0; i < n; i++) st.get(); console.log('data_version', Number(process.hrtime.bigint() - t) / n / 1000, 'µs'); }
