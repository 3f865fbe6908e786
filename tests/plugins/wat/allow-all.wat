;; world: plugin@0.2.0
;; `allow-all` (validator, hand-written, for the benchmarks): allows every request and reads
;; nothing. Its component is one core module with no imports (the least a plugin can be), so a
;; call costs what the host's own path costs: a fresh store and instance, the request lowered
;; into memory through a bump `cabi_realloc`, the call, the verdict lifted, the slot's reset.
;; `cargo bench --bench floor` serves two of these on `/validate` beside the demo policies.
(module
  (memory (export "memory") 1)
  (global $bump (mut i32) (i32.const 1024))

  (func $realloc (export "cabi_realloc") (param $old i32) (param $old_size i32) (param $align i32)
    (param $size i32) (result i32)
    (local $p i32) (local $have i32)
    (local.set $p
      (i32.and
        (i32.add (global.get $bump) (i32.sub (local.get $align) (i32.const 1)))
        (i32.sub (i32.const 0) (local.get $align))))
    (global.set $bump (i32.add (local.get $p) (local.get $size)))
    (local.set $have (i32.shl (memory.size) (i32.const 16)))
    (if (i32.gt_u (global.get $bump) (local.get $have))
      (then
        (if (i32.lt_s
              (memory.grow
                (i32.add
                  (i32.shr_u (i32.sub (global.get $bump) (local.get $have)) (i32.const 16))
                  (i32.const 1)))
              (i32.const 0))
          (then unreachable))))
    (local.get $p))

  ;; `ok(verdict { decision: allowed, remarks: {} })` and `ok(())` are all zeros in the
  ;; canonical ABI: a fresh zeroed area from the bump allocator is the answer.
  (func (export "validate-settings") (param i32 i32) (result i32)
    (call $realloc (i32.const 0) (i32.const 0) (i32.const 4) (i32.const 16)))
  (func (export "validate") (param $request i32) (result i32)
    (call $realloc (i32.const 0) (i32.const 0) (i32.const 8) (i32.const 256)))
)
