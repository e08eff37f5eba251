// Every message of the page must be the next seq after this user's position, and
// next_after its last seq: the contract's order guarantee, checked on every read.
// One regular-expression pass over the body, no JSON parse. This script runs once per user,
// in its setup, and leaves the object `chatsys.seq_order` in the user's variables; the
// plan's assertion on every read is a one-line JEXL script calling its `check` (a JSR223
// Groovy call costs a new Groovy engine and script context each time, several times the
// check itself). The check is statically compiled, its patterns compiled once.
// Also saved with the sample: `returned`, the messages on the page (a read is a bounded
// unit of work: at most read_limit), and `served_by`, the server the target names in
// X-Served-By or X-Instance, when it does.
import groovy.transform.CompileStatic
import java.util.regex.Matcher
import java.util.regex.Pattern
import org.apache.jmeter.assertions.AssertionResult
import org.apache.jmeter.samplers.SampleResult
import org.apache.jmeter.threads.JMeterVariables

@CompileStatic
class SeqOrder {
  static final Pattern SERVED_BY = ~/(?im)^X-Served-By:[ \t]*(\S+)/
  static final Pattern INSTANCE = ~/(?im)^X-Instance:[ \t]*(\S+)/
  static final Pattern SEQ = ~/"seq":\s*(\d+)/
  static final Pattern NEXT_AFTER = ~/"next_after":\s*(\d+)/

  static final String KEY = 'chatsys.seq_order'

  void check(SampleResult prev, JMeterVariables vars, AssertionResult result) {
    vars.put('returned', '')
    String headers = prev.getResponseHeaders()
    Matcher servedBy = SERVED_BY.matcher(headers)
    Matcher instance = INSTANCE.matcher(headers)
    vars.put('served_by', servedBy.find() ? servedBy.group(1) : instance.find() ? instance.group(1) : '')
    if (prev.getResponseCode() != '200') return
    String body = prev.getResponseDataAsString()
    long after = Long.parseLong(vars.get('after'))
    long expected = after + 1
    Matcher seqs = SEQ.matcher(body)
    while (seqs.find()) {
      long seq = Long.parseLong(seqs.group(1))
      if (seq != expected) {
        result.setFailure(true)
        result.setFailureMessage("seq " + seq + " where " + expected + " was due (after=" + after + ")")
        return
      }
      expected++
    }
    Matcher next = NEXT_AFTER.matcher(body)
    if (!next.find() || Long.parseLong(next.group(1)) != expected - 1) {
      result.setFailure(true)
      result.setFailureMessage("next_after is not the last seq " + (expected - 1) + " of the page")
      return
    }
    vars.put('returned', String.valueOf(expected - 1 - after))
    vars.put('after', String.valueOf(expected - 1))
    vars.put('after_' + vars.get('room'), String.valueOf(expected - 1))
  }
}

vars.putObject(SeqOrder.KEY, new SeqOrder())
