;; `start-trap` (validator, test-only, hand-written: no language toolchain emits a start
;; function that traps). Its core module's start function runs at every instantiation and
;; executes `unreachable`, so it can never be instantiated: wasmgate must refuse it at load
;; and at reload with the trap as the reason, and keep serving what it served before.
(module
  (memory (export "memory") 1)
  (func $start unreachable)
  (start $start)
  (func (export "cabi_realloc") (param i32 i32 i32 i32) (result i32)
    (i32.const 1024))
  (func (export "validate") (param $request i32) (result i32)
    unreachable)
)
