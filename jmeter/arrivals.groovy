// The open model's timer: one Poisson schedule of arrivals shared by the whole user pool.
// Each chat request claims the next arrival and waits for it; a request whose arrival is
// already past (every user was busy) goes at once, and its latency is still counted from
// the arrival (`scheduled_ms`, saved with every sample), so a slow system cannot hold the
// load back unseen: no coordinated omission. The schedule starts once every user of the
// pool has finished its setup (or `setup_timeout` seconds have passed) and lasts
// `arrival_seconds` (0: until the thread group's duration); then the test stops, so the
// measured stretch does not depend on how long the setup took.
import java.util.concurrent.CountDownLatch
import java.util.concurrent.TimeUnit

double rate = (vars.get('arrival_rate') ?: '10') as double
int users = (vars.get('open_threads') ?: '1') as int
long setupTimeoutMs = ((vars.get('setup_timeout') ?: '60') as long) * 1000L
long arrivalMs = ((vars.get('arrival_seconds') ?: '0') as long) * 1000L
String key = 'chatsys.arrivals'
Map schedule
synchronized (props) {
  schedule = props.get(key)
  if (schedule == null) {
    schedule = [ready: new CountDownLatch(users), next: 0d, origin: 0d, random: new Random()]
    props.put(key, schedule)
  }
}
if (vars.get('arrival_joined') == null) {
  vars.put('arrival_joined', '1')
  schedule.ready.countDown()
  schedule.ready.await(setupTimeoutMs, TimeUnit.MILLISECONDS)
}
long slot
synchronized (schedule) {
  if (schedule.next == 0d) schedule.next = schedule.origin = (double) System.currentTimeMillis()
  slot = (long) schedule.next
  schedule.next += -Math.log(1d - schedule.random.nextDouble()) * 1000d / rate
}
vars.put('scheduled_ms', String.valueOf(slot))
if (arrivalMs > 0 && slot >= schedule.origin + arrivalMs) {
  ctx.getEngine().askThreadsToStop()  // the schedule is over: each user stops after this request
  return 0L
}
Math.max(0L, slot - System.currentTimeMillis())
