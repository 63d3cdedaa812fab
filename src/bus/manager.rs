//! `org.qubes.Storage.Manager` at `/org/qubes/Storage`: pools come and go here.
//! CreatePool runs the pool setup (R§3.1) as an engine operation; the outbox then
//! serves the pool (InterfacesAdded) and announces the other pools' `IncludedIn` if it
//! changed, all before the reply. RemovePool never deletes files. GetPool and ListPools
//! are reads of the served objects.

use std::path::PathBuf;
use std::sync::Arc;

use qubes_storage_engine::{pool, PoolName, PoolSpec, RevisionsToKeep, DRIVER};
use zbus::{OwnedObjectPath, Variant};

use crate::auth::Action;
use crate::bus::authz::{Permission, Prompt};
use crate::bus::call::{Answer, Call};
use crate::bus::error::{quote, BusError, BusResult, Standard};
use crate::bus::live;
use crate::bus::objects::{Object, PoolObject};
use crate::bus::options::{Options, RawOptions};
use crate::bus::outbox::Item;
use crate::bus::reply;
use crate::bus::service::Service;
use crate::bus::values::{Entry, PoolValues};

const CREATE_POOL_KEYS: [&str; 4] = [
    "dir_path",
    "setup_check",
    "revisions_to_keep",
    "ephemeral_volatile",
];

/// The capability words clients can probe.
pub const FEATURES: [&str; 6] = [
    "jobs",
    "fd-import",
    "fd-export",
    "revision-details",
    "measure-space",
    "export-delta",
];

/// The Manager's properties (all constant).
pub fn entries() -> Vec<Entry<'static>> {
    vec![
        ("Version", Variant::from(env!("CARGO_PKG_VERSION"))),
        ("Drivers", Variant::from(vec![DRIVER])),
        ("Features", Variant::from(FEATURES.to_vec())),
    ]
}

/// Answers a call of `member` on the Manager.
pub async fn answer(svc: &Arc<Service>, call: &Call, member: &str) -> BusResult<Answer> {
    match member {
        "CreatePool" => create_pool(svc, call).await,
        "RemovePool" => remove_pool(svc, call).await,
        "GetPool" => get_pool(call),
        "ListPools" => list_pools(call),
        _ => Err(BusError::standard(
            Standard::UnknownMethod,
            format!("org.qubes.Storage.Manager has no method {}", quote(member)),
        )),
    }
}

fn parse_name(name: &str) -> BusResult<PoolName> {
    PoolName::parse(name).map_err(BusError::from)
}

async fn create_pool(svc: &Arc<Service>, call: &Call) -> BusResult<Answer> {
    let (name, driver, raw): (String, String, RawOptions) = call.args()?;
    let name = parse_name(&name)?;
    if driver != DRIVER {
        return Err(BusError::storage(
            qubes_storage_engine::ErrorKind::NotSupported,
            format!(
                "Pool {name}: driver {} is not supported; the drivers are: {DRIVER}",
                quote(&driver)
            ),
        ));
    }
    let options = Options::parse(raw, &CREATE_POOL_KEYS, &format!("pool {name}"))?;
    let mut spec = pool_spec(name, &options)?;
    let mut permission = Permission::on_pool(Action::ManagePools, spec.name.as_str());
    // Rules judge where the directory is, not how the caller spelled it: a rule that
    // allows `/srv/alice/` must not allow `/srv/alice/../bob` (or a symlink there).
    // The pool is then made at exactly that path — a symlink on the path as written
    // could be pointed elsewhere meanwhile. A path that cannot be resolved is shown as
    // written; the engine refuses it.
    let written = spec.dir_path.clone();
    let resolved = svc
        .blocking(move |_| pool::resolve(&written).unwrap_or(written))
        .await?;
    permission.dir_path = Some(resolved.display().to_string());
    spec.dir_path = resolved;
    let prompt = Prompt::Allowed {
        no_user_interaction: options.no_user_interaction(),
    };
    svc.authorize(&call.header(), &[permission], prompt).await?;
    tracing::info!(method = "CreatePool", pool = %spec.name, dir = %spec.dir_path.display(), "call");
    let path = crate::bus::path::pool_path(&spec.name);
    svc.operate(call, Vec::new(), move |work| {
        let config = work.engine.create_pool(spec)?;
        let info = work.engine.pool_info(&config.name)?;
        let object = Arc::new(PoolObject::new(config.name.clone(), PoolValues::of(&info)));
        work.refresh.outbox.send(Item::Export {
            object: Object::Pool(object),
            live: vec![("UsageDetails", live::usage_details(&info))],
        });
        work.refresh.pools();
        Ok(())
    })
    .await?;
    call.reply(&(path,))
}

async fn remove_pool(svc: &Arc<Service>, call: &Call) -> BusResult<Answer> {
    let (name, raw): (String, RawOptions) = call.args()?;
    let name = parse_name(&name)?;
    let options = Options::parse(raw, &[], &format!("pool {name}"))?;
    let permission = Permission::on_pool(Action::ManagePools, name.as_str());
    let prompt = Prompt::Allowed {
        no_user_interaction: options.no_user_interaction(),
    };
    svc.authorize(&call.header(), &[permission], prompt).await?;
    tracing::info!(method = "RemovePool", pool = %name, "call");
    let object = svc.registry.pool(&name);
    svc.operate(call, Vec::new(), move |work| {
        work.engine.remove_pool(&name)?;
        if let Some(object) = object {
            work.refresh
                .outbox
                .send(Item::Unexport(Object::Pool(object)));
        }
        work.refresh.pools();
        Ok(())
    })
    .await?;
    call.done()
}

/// CreatePool's options as the engine's spec.
fn pool_spec(name: PoolName, options: &Options) -> BusResult<PoolSpec> {
    let dir_path = options.string("dir_path")?.ok_or_else(|| {
        BusError::invalid(format!("Pool {name}: the option dir_path is required"))
    })?;
    let dir_path = PathBuf::from(dir_path);
    if !dir_path.is_absolute() {
        return Err(BusError::invalid(format!(
            "Pool {name}: dir_path {} is not an absolute path",
            quote(&dir_path.display().to_string())
        )));
    }
    let revisions_to_keep = match options.signed("revisions_to_keep")? {
        Some(n) => {
            RevisionsToKeep::new(n).map_err(|e| BusError::from(e.on(format!("pool {name}"))))?
        }
        None => RevisionsToKeep::DEFAULT,
    };
    Ok(PoolSpec {
        name,
        dir_path,
        setup_check: options.bool("setup_check")?.unwrap_or(true),
        revisions_to_keep,
        ephemeral_volatile: options.bool("ephemeral_volatile")?.unwrap_or(false),
    })
}

fn get_pool(call: &Call) -> BusResult<Answer> {
    let (name, raw): (String, RawOptions) = call.args()?;
    Options::parse(raw, &[], &"the storage manager")?;
    let name = parse_name(&name)?;
    Ok(call.read(move |registry, msg| match registry.pool(&name) {
        Some(pool) => reply::build(&msg.header(), &(pool.path.clone(),), "GetPool"),
        None => Err(BusError::not_found(format!("Pool {name} does not exist"))),
    }))
}

fn list_pools(call: &Call) -> BusResult<Answer> {
    let (raw,): (RawOptions,) = call.args()?;
    Options::parse(raw, &[], &"the storage manager")?;
    Ok(call.read(|registry, msg| {
        let paths: Vec<OwnedObjectPath> = registry.pools().iter().map(|p| p.path.clone()).collect();
        reply::build(&msg.header(), &(paths,), "ListPools")
    }))
}
