// The open model's timer: one Poisson schedule of arrivals shared by the whole user pool.
// Each chat request claims the next arrival and waits for it; a request whose arrival is
// already past (every user was busy) goes at once, and its latency is still counted from
// the arrival (`scheduled_ms`, saved with every sample), so a slow system cannot hold the
// load back unseen: no coordinated omission. The schedule starts once every user of the
// pool has finished its setup (a user whose login failed has stopped and is not waited
// for; at most `setup_timeout` seconds) and lasts
// `arrival_seconds` (0: until the thread group's duration); then the test stops, so the
// measured stretch does not depend on how long the setup took.
import java.util.concurrent.atomic.AtomicInteger
import org.apache.jmeter.threads.JMeterContextService

double rate = (vars.get('arrival_rate') ?: '10') as double
long rampupMs = ((vars.get('rampup') ?: '0') as long) * 1000L
long setupTimeoutMs = ((vars.get('setup_timeout') ?: '60') as long) * 1000L
long arrivalMs = ((vars.get('arrival_seconds') ?: '0') as long) * 1000L
String key = 'chatsys.arrivals'
Map schedule
synchronized (props) {
  schedule = props.get(key)
  if (schedule == null) {
    schedule = [joined: new AtomicInteger(), next: 0d, origin: 0d, random: new Random()]
    props.put(key, schedule)
  }
}
if (vars.get('arrival_joined') == null) {
  vars.put('arrival_joined', '1')
  schedule.joined.incrementAndGet()
  // Every user started (the ramp-up is over) and every one still running has joined.
  long deadline = System.currentTimeMillis() + setupTimeoutMs
  long rampedUp = JMeterContextService.getTestStartTime() + rampupMs
  while (System.currentTimeMillis() < deadline && (System.currentTimeMillis() < rampedUp
      || schedule.joined.get() < JMeterContextService.getNumberOfThreads())) {
    Thread.sleep(20)
  }
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
