"""A small asyncio controller runtime on kubernetes-asyncio, shared by every controller of kaito-py.

Layers (imports only point down): ``clock``, ``errors``, ``kinds``, ``metrics``, ``drift`` → ``client``
(generic REST on dicts, timeouts, QPS) → ``queue``, ``informer``, ``events``, ``tasks`` →
``controller`` → ``manager``. Nothing here knows about Workspaces or Azure.

How to write a controller with it
---------------------------------
1. **Write a reconciler**: an object with ``async def reconcile(self, key: ObjectKey) -> Result``.
   Read the object and everything related from informer stores (``informer.store.get(key)``,
   ``.list(namespace, labels)``, ``.by_index(name, value)``), never from events. Compute the desired
   state, write only the difference (``client.apply`` for server-side apply with your field
   manager, ``client.create`` / ``patch`` / ``delete``), and write status through the status
   subresource. Never sleep or poll inside reconcile: return ``Result(requeue_after=seconds)`` to
   look again later, or rely on a watch event. Raise ``TransientError`` (retried with backoff, or
   after ``retry_after``) or ``PermanentError`` (not retried with backoff; report it on the object
   first; its ``retry_after`` asks for one slow look later). ``ApiError`` from the client is already
   classified (``transient``; ``refused`` for 400/403/422, which the same request will meet again).
   ``drift.find_drift`` / ``restore_patch`` compare a child's live object with your intent and put
   back only what someone changed. Running reconcile twice must do nothing new.

2. **Wire it** from a controller factory that receives the shared ``Manager`` (the application's
   composition root, ``kaito.operator.build_operator``, calls the factories). A generic example,
   a controller that keeps an annotation on every ConfigMap its Pods mount::

       from kaito_operator.runtime import POD, ResourceKind, Result, map_by_labels

       CONFIGMAP = ResourceKind("", "v1", "ConfigMap", "configmaps", namespaced=True)

       class ConfigMapReconciler:
           def __init__(self, client: KubeClient, configmaps: Informer, pods: Informer) -> None: ...
           async def reconcile(self, key: ObjectKey) -> Result:
               configmap = self.configmaps.store.get(key)
               if configmap is None:
                   return Result()               # deleted: nothing to do
               ...
               return Result(requeue_after=30)   # e.g. look at something external again in 30 s

       def configmap_controller(manager: Manager) -> Controller:
           configmaps = manager.informer(CONFIGMAP)          # informers are shared per kind
           pods = manager.informer(POD)
           reconciler = ConfigMapReconciler(manager.client, configmaps, pods)
           controller = manager.controller("configmap", reconciler, concurrency=10)
           controller.watch(configmaps)                      # its own kind: key = the object's key
           controller.watch(pods, map_by_labels("example.com/configmap"))   # related objects
           return controller

   Mappers turn events into keys: ``map_to_self``, ``map_to_owner(KIND)`` (controller owner
   reference), ``map_by_labels(name_label, namespace_label)``, or any function of a
   ``WatchEvent`` (``.type``, ``.obj``, ``.old``). An optional predicate filters events.
   Cluster-scoped kinds use ``ObjectKey("", name)``; a ``ResourceKind`` names any resource
   (core or custom; kinds.py predefines the core ones, ``kaito_operator.api.kinds`` the
   project's Workspace and Machine).

3. **Run**: ``await manager.run(stop_event)`` starts all informers, waits for their caches, starts
   each controller's workers (``concurrency`` at a time, one reconcile per key), and on stop lets
   reconciles in flight finish within the grace period. Pass ``leader_elector=LeaderElector(...)``
   to run controllers only while holding a Lease. Events go through ``EventRecorder``;
   metrics (reconciles, durations, queue depth, errors, API requests by verb) through
   ``RuntimeMetrics``; time through an injected ``Clock`` (tests use ``FakeClock.step``).
"""

from kaito_operator.runtime.client import KubeClient, label_selector_string
from kaito_operator.runtime.clock import Clock, FakeClock, RealClock
from kaito_operator.runtime.controller import Controller, Reconciler, Result
from kaito_operator.runtime.errors import (
    ApiError,
    PermanentError,
    ReconcileError,
    TransientError,
    is_transient,
)
from kaito_operator.runtime.events import EventRecorder
from kaito_operator.runtime.informer import Informer, Store, WatchEvent
from kaito_operator.runtime.kinds import (
    DEPLOYMENT,
    EVENT,
    LEASE,
    NAMESPACE,
    NODE,
    POD,
    SERVICE,
    STATEFULSET,
    ObjectKey,
    ResourceKind,
    key_of,
)
from kaito_operator.runtime.leader import LeaderElector, LostLeadership
from kaito_operator.runtime.manager import Manager
from kaito_operator.runtime.mapping import Mapper, map_by_labels, map_to_owner, map_to_self
from kaito_operator.runtime.metrics import RuntimeMetrics
from kaito_operator.runtime.queue import ExponentialBackoff, QueueShutDown, WorkQueue
from kaito_operator.runtime.tasks import TaskGuard

__all__ = [
    "DEPLOYMENT",
    "EVENT",
    "LEASE",
    "NAMESPACE",
    "NODE",
    "POD",
    "SERVICE",
    "STATEFULSET",
    "ApiError",
    "Clock",
    "Controller",
    "EventRecorder",
    "ExponentialBackoff",
    "FakeClock",
    "Informer",
    "KubeClient",
    "LeaderElector",
    "LostLeadership",
    "Manager",
    "Mapper",
    "ObjectKey",
    "PermanentError",
    "QueueShutDown",
    "RealClock",
    "ReconcileError",
    "Reconciler",
    "ResourceKind",
    "Result",
    "RuntimeMetrics",
    "Store",
    "TaskGuard",
    "TransientError",
    "WatchEvent",
    "WorkQueue",
    "is_transient",
    "key_of",
    "label_selector_string",
    "map_by_labels",
    "map_to_owner",
    "map_to_self",
]
