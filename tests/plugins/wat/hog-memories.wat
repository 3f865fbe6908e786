;; `hog-memories` (validator, test-only, hand-written: no language toolchain emits several
;; memories). Besides memory 0 (the canonical ABI's), it has four memories of its own and grows
;; each by 160 pages (10 MiB) in `validate`, then traps with `unreachable`. Under a cap counted
;; per memory, every grow succeeds and the call ends at `unreachable`; under a cap across all
;; memories (wasmgate's), a 16 MiB cap stops the second grow: "memory limit ... exceeded".
(module
  (memory $abi (export "memory") 1)
  (memory $m1 0)
  (memory $m2 0)
  (memory $m3 0)
  (memory $m4 0)
  (global $bump (mut i32) (i32.const 1024))

  ;; A bump allocator in memory 0, growing it as needed: the host lowers the request into it.
  (func (export "cabi_realloc") (param $old i32) (param $old_size i32) (param $align i32)
    (param $size i32) (result i32)
    (local $p i32) (local $have i32)
    (local.set $p
      (i32.and
        (i32.add (global.get $bump) (i32.sub (local.get $align) (i32.const 1)))
        (i32.sub (i32.const 0) (local.get $align))))
    (global.set $bump (i32.add (local.get $p) (local.get $size)))
    (local.set $have (i32.shl (memory.size $abi) (i32.const 16)))
    (if (i32.gt_u (global.get $bump) (local.get $have))
      (then
        (if (i32.lt_s
              (memory.grow $abi
                (i32.add
                  (i32.shr_u (i32.sub (global.get $bump) (local.get $have)) (i32.const 16))
                  (i32.const 1)))
              (i32.const 0))
          (then unreachable))))
    (local.get $p))

  (func (export "validate") (param $request i32) (result i32)
    (drop (memory.grow $m1 (i32.const 160)))
    (drop (memory.grow $m2 (i32.const 160)))
    (drop (memory.grow $m3 (i32.const 160)))
    (drop (memory.grow $m4 (i32.const 160)))
    unreachable)
)
