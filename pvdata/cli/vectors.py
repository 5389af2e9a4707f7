"""`pvdata vectors list|show|export|import`: persona vectors in the warehouse and in files."""

from __future__ import annotations

import argparse

from pvdata.cli.options import add_warehouse_option, parse_int_list, warehouse_root


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("vectors", help="list, show, export and import persona vectors")
    vsub = parser.add_subparsers(dest="vectors_command", metavar="ACTION", required=True)

    p = vsub.add_parser("list", help="vectors in the warehouse")
    add_warehouse_option(p)
    p.add_argument("--trait", default=None)
    p.add_argument("--model", default=None)
    p.set_defaults(func=_list)

    p = vsub.add_parser("show", help="one vector: metadata and the norm per layer")
    add_warehouse_option(p)
    p.add_argument("vector_id", help="vector id or a unique prefix")
    p.set_defaults(func=_show)

    p = vsub.add_parser("export", help="write a warehouse vector to a file")
    add_warehouse_option(p)
    p.add_argument("vector_id")
    p.add_argument("--out", required=True, help="file: .safetensors, .pt (research), .gguf, or --format")
    p.add_argument("--format", default=None, help="safetensors | pt | gguf | lm-eval")
    p.add_argument(
        "--layers",
        default=None,
        help="layers to export (gguf, lm-eval), e.g. 12-20 (default: the vector's computed layers but 0; "
        "gguf: from 2 up)",
    )
    p.add_argument("--coef", type=float, default=None, help="scale baked into gguf / lm-eval files")
    p.set_defaults(func=_export)

    p = vsub.add_parser("import", help="store a vector file in the warehouse (an import run)")
    add_warehouse_option(p)
    p.add_argument("file")
    p.add_argument("--format", default=None)
    p.add_argument("--trait", default=None, help="trait name (files without metadata)")
    p.add_argument("--model-id", default=None, help="model the vector belongs to (files without metadata)")
    p.add_argument("--n-layers", type=int, default=None, help="L, for gguf and lm-eval files")
    p.set_defaults(func=_import)


def _list(args: argparse.Namespace) -> int:
    from pvdata.warehouse import connect
    from pvdata.warehouse.display import render

    con = connect(warehouse_root(args.warehouse))
    where, params = [], []
    if args.trait:
        where.append("trait = ?")
        params.append(args.trait)
    if args.model:
        where.append("model_id = ?")
        params.append(args.model)
    sql = (
        "SELECT vector_id, trait, model_id, pooling, method, min(n_pos) AS n_pos, min(n_neg) AS n_neg, "
        "count(DISTINCT layer) AS n_layers_stored, min(run_id) AS run_id FROM vectors"
        + (" WHERE " + " AND ".join(where) if where else "")
        + " GROUP BY ALL ORDER BY trait, model_id, vector_id"
    )
    cur = con.execute(sql, params)
    columns = [d[0] for d in cur.description]
    print(render("table", columns, cur.fetchall()))
    return 0


def _show(args: argparse.Namespace) -> int:
    from pvdata.vectors.store import read_vector
    from pvdata.warehouse import connect

    vector = read_vector(connect(warehouse_root(args.warehouse)), args.vector_id)
    print(f"vector_id: {vector.vector_id}\ntrait: {vector.trait} ({vector.trait_version or 'unversioned'})")
    print(f"model_id: {vector.model_id}\npooling: {vector.pooling}  method: {vector.method}")
    print(f"n_pos: {vector.n_pos}  n_neg: {vector.n_neg}  shape: {list(vector.shape)}")
    norms = vector.norms()
    print("layer  norm")
    for layer in vector.layers:
        print(f"{layer:5d}  {float(norms[layer]):.4f}")
    return 0


def _export(args: argparse.Namespace) -> int:
    from pvdata.vectors import save_vector
    from pvdata.vectors.store import read_vector
    from pvdata.warehouse import connect

    vector = read_vector(connect(warehouse_root(args.warehouse)), args.vector_id)
    options: dict[str, object] = {}
    if args.layers:
        options["layers"] = parse_int_list(args.layers, what="--layers")
    if args.coef is not None:
        options["coef"] = args.coef
    path = save_vector(vector, args.out, format=args.format, **options)
    print(f"wrote {path}")
    return 0


def _import(args: argparse.Namespace) -> int:
    from pvdata.vectors import load_vector
    from pvdata.vectors.store import vector_columns
    from pvdata.warehouse import Warehouse

    meta = {
        k: v
        for k, v in (("trait", args.trait), ("model_id", args.model_id), ("n_layers", args.n_layers))
        if v
    }
    vector = load_vector(args.file, format=args.format, **meta)
    config = {"file": str(args.file), "vector_id": vector.vector_id}
    with Warehouse(warehouse_root(args.warehouse)).run("import", config, model_id=vector.model_id) as run:
        if run.skipped:
            print(run.message)
            return 0
        run.writer("vectors").write_columns(vector_columns(vector, run.run_id))
        run.stats["vector_id"] = vector.vector_id
    print(f"imported {vector.vector_id} ({vector.trait}, {vector.model_id}) as run {run.run_id}")
    return 0
